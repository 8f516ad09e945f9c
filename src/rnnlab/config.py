"""Config helpers that import neither torch nor Lightning, so `--help` and `--cfg` stay instant."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"


def register_resolvers() -> None:
    """``${rnnlab_root:}``: the project root, where conf/ lives."""
    if not OmegaConf.has_resolver("rnnlab_root"):
        OmegaConf.register_new_resolver("rnnlab_root", lambda: str(ROOT))


register_resolvers()
