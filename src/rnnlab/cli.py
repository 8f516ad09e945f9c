"""The Hydra entry point of `python train.py`; heavy imports wait until a run starts.

Bad input (an unknown option or key, a value that can not be used, an output folder that can not
be written) ends with one sentence on stderr and exit code 2; ``HYDRA_FULL_ERROR=1`` shows the
full trace instead.
"""

from __future__ import annotations

import difflib
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from rnnlab.config import CONF_DIR

# set when this module (not the user) asked Hydra to let errors through, so that child processes
# (DDP launchers re-run the script) keep the short messages too
_OWN_FULL_ERROR = "RNNLAB_CONDENSED_ERRORS"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from rnnlab.train import run

    return run(cfg)


def main() -> float | None:
    """`python train.py [overrides]`: Hydra's entry point with one-sentence errors."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(_OWN_FULL_ERROR) != "1":
        return hydra_main()
    previous = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", _OWN_FULL_ERROR)}
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach us instead of printing them
    os.environ[_OWN_FULL_ERROR] = "1"
    kept = RunDirGuard(sys.argv[1:])
    try:
        return hydra_main()
    except SystemExit as e:
        if e.code == 2:
            kept.restore()
        raise
    except (HydraException, OmegaConfBaseException, OSError) as e:
        kept.restore()
        print(f"error: {one_sentence(e)}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        traceback.print_exc()
        sys.exit(1)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def one_sentence(e: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line errors as one sentence that names the problem."""
    if isinstance(e, OSError) and not isinstance(e, HydraException):
        where = f" {e.filename}" if e.filename else ""
        return f"cannot write the output folder{where}: {e.strerror or e}"
    text = str(e).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(e).__name__
    if "Could not find '" in first and "Available options in" in text:
        missing = first.split("Could not find '", 1)[1].split("'", 1)[0]
        group = missing.split("/", 1)[0]
        options = []
        for line in text.split("Available options in", 1)[1].splitlines()[1:]:
            if not line.strip():
                break
            options.append(line.strip())
        return f"could not find '{missing}': choose {group}= from {', '.join(options)}"
    if first.startswith("Could not override '") or first.startswith("Could not append to config"):
        key = first.split("'", 2)[1] if "'" in first else first
        return f"unknown config key '{key}'{_did_you_mean(key)} (add a new key with +{key}=...)"
    override = getattr(e, "override", None)
    if override is not None:
        return f"cannot parse the override '{override}': {first}"
    cause = e.__cause__
    if isinstance(cause, OmegaConfBaseException) and cause is not e:
        detail = str(cause).strip().splitlines()
        if detail:
            return f"{first.rstrip('.')}: {detail[0]}"
    return first


def _did_you_mean(key: str) -> str:
    """`` (did you mean model.hidden_size?)`` when a close key exists in the default config."""
    parent, _, leaf = key.rpartition(".")
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train")
        node = cfg
        for part in filter(None, parent.split(".")):
            node = node[part]
        keys = [str(k) for k in node.keys()]
    except Exception:  # noqa: BLE001 - a suggestion is optional
        return ""
    close = difflib.get_close_matches(leaf, keys, n=1)
    return f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""


class RunDirGuard:
    """Keeps the ``.hydra/`` files of an existing ``hydra.run.dir`` when its new run fails early."""

    def __init__(self, argv: list[str]) -> None:
        self.files: dict[Path, bytes] = {}
        for arg in argv:
            if arg.startswith("hydra.run.dir="):
                folder = Path(arg.split("=", 1)[1]) / ".hydra"
                if folder.is_dir():
                    self.files = {p: p.read_bytes() for p in folder.glob("*.yaml")}

    def restore(self) -> None:
        for path, content in self.files.items():
            try:
                path.write_bytes(content)
            except OSError:
                pass
