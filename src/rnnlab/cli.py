"""The Hydra entry point of `python train.py`; heavy imports wait until a run starts.

Bad input (an unknown option or key, a value that can not be used, an output folder that can not
be written) ends with one sentence on stderr and exit code 2; ``HYDRA_FULL_ERROR=1`` shows the
full trace instead. Every value rule of ``rnnlab.config_checks.RULES`` is checked on the composed
config before torch or Lightning is imported and before Hydra writes anything; a run refused later
leaves no folder behind, and an existing run folder keeps what it had.
"""

from __future__ import annotations

import difflib
import os
import shutil
import sys
import traceback
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from rnnlab.config import CONF_DIR
from rnnlab.errors import RnnlabError

# set when this module (not the user) asked Hydra to let errors through, so that child processes
# (DDP launchers re-run the script) keep the short messages too
_OWN_FULL_ERROR = "RNNLAB_CONDENSED_ERRORS"


# a single run's error, raised again by main() once Hydra has closed the job
_FAILED: list[RnnlabError] = []


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    RunDirGuard.job_dir = Path(HydraConfig.get().runtime.output_dir)
    from rnnlab.train import in_sweep, run

    try:
        return run(cfg)
    except RnnlabError as e:
        if in_sweep():
            raise  # the sweeper records the job as failed and goes on
        _FAILED.append(e)
        return None


def main() -> float | None:
    """`python train.py [overrides]`: Hydra's entry point with one-sentence errors."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and os.environ.get(_OWN_FULL_ERROR) != "1":
        result = hydra_main()
        if _FAILED:  # the whole trace, as asked
            raise _FAILED.pop()
        return result
    previous = {k: os.environ.get(k) for k in ("HYDRA_FULL_ERROR", _OWN_FULL_ERROR)}
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach us instead of printing them
    os.environ[_OWN_FULL_ERROR] = "1"
    kept = RunDirGuard(sys.argv[1:])
    try:
        run_dir = preflight(sys.argv[1:])
        if run_dir is not None:  # the folder as Hydra will name it
            kept.snapshot(run_dir)
        result = hydra_main()
        if _FAILED:
            raise _FAILED.pop()
        return result
    except SystemExit as e:
        if e.code == 2:
            kept.restore()
        raise
    except RnnlabError as e:  # bad input (exit 2), or a run that stopped early with its own code
        code = getattr(e, "exit_code", 2)
        if code == 2:
            kept.restore()
        if not _ddp_worker():  # a DDP worker stops with rank 0, which says why
            print(f"error: {e}", file=sys.stderr)
        sys.exit(code)
    except BrokenPipeError:  # `python train.py --help | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        sys.exit(141)  # 128 + SIGPIPE, as a shell reports a command a pipe closed on
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


def _ddp_worker() -> bool:
    """Whether this process is a DDP worker (global rank above zero); never imports Lightning."""
    module = sys.modules.get("lightning.pytorch.utilities.rank_zero")
    return module is not None and getattr(module.rank_zero_only, "rank", 0) > 0


def preflight(argv: list[str]) -> Path | None:
    """Compose the run's config as Hydra will and check every declared value rule, before torch
    or Lightning is imported and before anything is written; return the run's folder.

    Sweeps (``-m``), ``--help``, ``--cfg``, ``--info`` and another config folder are left to Hydra
    and the run itself, and so is a config that does not compose: Hydra reports that next.
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra

    from rnnlab.config_checks import check_config

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:  # Hydra's own parser reports it in a moment
        return None
    if (
        args.help
        or args.hydra_help
        or args.cfg
        or args.info
        or args.shell_completion
        or args.multirun
        or args.config_path
        or args.config_dir
        or args.experimental_rerun
    ):
        return None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                config_name=args.config_name or "train",
                overrides=args.overrides,
                return_hydra_config=True,
            )
    except Exception:  # noqa: BLE001 - Hydra composes again and says what is wrong
        return None
    finally:
        GlobalHydra.instance().clear()
    if str(cfg.hydra.get("mode", "RUN")).endswith("MULTIRUN"):
        return None
    check_config(cfg, gpus=False)
    try:
        return _absolute(str(cfg.hydra.run.dir))
    except OmegaConfBaseException:
        return None


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
            if not line.strip() or not line[0].isspace():  # the search path Hydra adds next
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
    """A run refused with exit code 2 leaves the disk as it was.

    An existing ``hydra.run.dir`` gets back the ``.hydra/`` files and ``train.log`` it had (bytes
    and times), and loses what the refused run added there; a folder the refused run created
    holding nothing but those files (a stub) is removed. Sweeps are left alone.
    """

    job_dir: Path | None = None  # the folder Hydra gave the run, set once the job starts

    def __init__(self, argv: list[str]) -> None:
        RunDirGuard.job_dir = None
        # a sweep records its failed jobs; a DDP worker (LOCAL_RANK > 0) shares rank 0's folder
        self.active = not any(a in ("-m", "--multirun") for a in argv) and os.environ.get(
            "LOCAL_RANK", "0"
        ) in ("", "0")
        self.snapshot(_run_dir_in(argv))

    def snapshot(self, run_dir: Path | None) -> None:
        """Note what ``run_dir`` holds now (nothing, when it does not exist yet)."""
        self.run_dir = run_dir
        self.existed = self.run_dir is not None and self.run_dir.exists()
        self.new_root = self.run_dir  # the outermost folder a refused run would leave behind
        while self.new_root is not None and not self.new_root.parent.exists():
            self.new_root = self.new_root.parent
        self.files: dict[Path, tuple[bytes, int, int]] = {}
        if self.existed:
            for path in [*self.run_dir.glob(".hydra/*"), *self.run_dir.glob("*.log")]:
                if path.is_file():
                    stat = path.stat()
                    self.files[path] = (path.read_bytes(), stat.st_atime_ns, stat.st_mtime_ns)
        self.hydra_dir_existed = self.existed and (self.run_dir / ".hydra").is_dir()

    def restore(self) -> None:
        if not self.active:
            return
        job_dir = _absolute(RunDirGuard.job_dir) if RunDirGuard.job_dir else None
        try:
            if self.existed and job_dir in (None, self.run_dir):
                self._restore_existing()
            elif job_dir is not None and job_dir.is_dir() and self._remove_stub(job_dir):
                if job_dir == self.run_dir and self.new_root != job_dir:
                    for folder in job_dir.parents:  # the folders made for it, if left empty
                        if folder.is_dir() and not any(folder.iterdir()):
                            folder.rmdir()
                        if folder == self.new_root:
                            break
        except OSError:
            pass

    def _restore_existing(self) -> None:
        assert self.run_dir is not None
        for path in [*self.run_dir.glob(".hydra/*"), *self.run_dir.glob("*.log")]:
            if path.is_file() and path not in self.files:
                path.unlink()
        if not self.hydra_dir_existed and (self.run_dir / ".hydra").is_dir():
            with_files = any((self.run_dir / ".hydra").iterdir())
            if not with_files:
                (self.run_dir / ".hydra").rmdir()
        for path, (content, atime, mtime) in self.files.items():
            if not path.is_file() or path.read_bytes() != content:
                path.write_bytes(content)
            os.utime(path, ns=(atime, mtime))

    @staticmethod
    def _remove_stub(folder: Path) -> bool:
        """Remove ``folder`` when it holds only what Hydra writes as a job starts."""
        for path in folder.iterdir():
            if path.name == ".hydra" and path.is_dir():
                if any(p.suffix != ".yaml" or not p.is_file() for p in path.iterdir()):
                    return False
            elif not (path.is_file() and path.suffix == ".log"):
                return False
        shutil.rmtree(folder)
        return True


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(path))


def _run_dir_in(argv: list[str]) -> Path | None:
    """The folder a ``hydra.run.dir=`` override names (quotes removed), if there is one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = None
    for arg in argv:
        if arg.startswith("hydra.run.dir="):
            try:
                value = OverridesParser.create().parse_override(arg).value()
            except HydraException:
                value = None
    return _absolute(str(value)) if isinstance(value, str) and value.strip() else None
