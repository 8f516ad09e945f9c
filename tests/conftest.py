"""Shared fixtures: compose the real config with overrides, outputs in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from rnnlab.config import CONF_DIR, ROOT

SHARED_DATA = ROOT.parent / "shared" / "data"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one worker per core: each worker's torch (and every process it starts) on one thread, since
    # threads that fight over the same cores run these small nets several times slower
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

# Speed only: no progress bar and no model summary. Every mode also has a test with the
# defaults a user gets (tests/test_defaults.py and tests/test_readme.py).
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def make_cfg(overrides: list[str], output_dir: Path, config_name: str = "train") -> DictConfig:
    """The composed config as `python train.py` would see it, writing into ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
    return cfg


@pytest.fixture
def cfg_factory(tmp_path):
    def factory(*overrides: str, subdir: str = "run") -> DictConfig:
        return make_cfg(list(overrides), tmp_path / subdir)

    return factory


def run_cli(
    args: list[str],
    cwd: Path = ROOT,
    timeout: float = 300,
    env: dict | None = None,
    script: str = "train.py",
    stdin: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a project script in a subprocess, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    # this checkout's package, even where another checkout is pip-installed in editable mode
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "src"), full_env.get("PYTHONPATH")])
    )
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        input=stdin,
    )


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data sets are not at {SHARED_DATA}")
    return SHARED_DATA
