"""Bad input: one clear sentence, a non-zero exit, no traceback, nothing written over."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import QUIET, run_cli

from rnnlab import cli
from rnnlab.config import ROOT

TINY = [
    "data=pattern",
    "data.n_train=64",
    "data.n_val=32",
    "data.n_test=32",
    "trainer.max_epochs=1",
]


def _not_a_checkpoint(tmp: Path) -> str:
    path = tmp / "notes.ckpt"
    path.write_text("these are notes, not weights\n")
    return str(path)


def _pickled_code(tmp: Path) -> str:
    """A checkpoint that would run code when unpickled without ``weights_only``."""
    path = tmp / "evil.ckpt"
    torch.save({"state_dict": {}, "rnnlab": {"config": {}}, "payload": Path("x")}, path)
    return str(path)


def _other_model(tmp: Path) -> str:
    """A real checkpoint of a GRU with hidden_size 8 on the pattern task."""
    from conftest import make_cfg

    from rnnlab.train import train

    cfg = make_cfg([*TINY, *QUIET, "model=gru", "model.hidden_size=8", "test=false"], tmp / "gru")
    train(cfg)
    return str(tmp / "gru" / "checkpoints" / "last.ckpt")


def _empty_run(tmp: Path) -> str:
    (tmp / "empty_run").mkdir()
    return str(tmp / "empty_run")


def _file_as_folder(tmp: Path) -> str:
    (tmp / "a_file").write_text("")
    return str(tmp / "a_file" / "run")


def _empty_dir(tmp: Path) -> str:
    (tmp / "names").mkdir()
    return str(tmp / "names")


def _names_file(content: bytes):
    def make(tmp: Path) -> str:
        folder = tmp / "names"
        folder.mkdir()
        (folder / "English.txt").write_bytes(content)
        return str(folder)

    return make


def _short_text(tmp: Path) -> str:
    (tmp / "short.txt").write_text("to be")
    return str(tmp / "short.txt")


# (id, overrides with {x} for a prepared path, how to prepare it, the sentence expected)
CASES = [
    ("unknown-option", ["model=lstmm"], None, "could not find 'model/lstmm': choose model= from"),
    ("unknown-data", ["data=imagenet"], None, "could not find 'data/imagenet'"),
    (
        "misspelled-key",
        ["model.hiden_size=3"],
        None,
        "unknown config key 'model.hiden_size' (did you mean model.hidden_size?)",
    ),
    ("unknown-top-key", ["epochs=3"], None, "unknown config key 'epochs'"),
    ("unparsable", ["model.hidden_size=[1"], None, "cannot parse the override"),
    ("lr-not-a-number", ["optimizer.lr=abc"], None, "optimizer.lr must be a positive number"),
    (
        "lr-negative",
        ["optimizer.lr=-0.1"],
        None,
        "optimizer.lr must be a positive number, got -0.1",
    ),
    (
        "max-epochs-word",
        ["trainer.max_epochs=abc"],
        None,
        "trainer.max_epochs must be an integer (-1 for no limit), got 'abc'",
    ),
    ("seed-word", ["seed=abc"], None, "seed must be an integer from 0 to 4294967295, got 'abc'"),
    (
        "hidden-size-0",
        ["model.hidden_size=0"],
        None,
        "model.hidden_size must be a positive integer",
    ),
    ("num-layers-0", ["model.num_layers=0"], None, "model.num_layers must be a positive integer"),
    ("dropout-1.5", ["model.dropout=1.5"], None, "model.dropout must be in [0, 1), got 1.5"),
    ("batch-size-0", ["data.batch_size=0"], None, "data.batch_size must be a positive integer"),
    ("negative-T", ["data=adding", "data.T=-3"], None, "data.T must be a positive integer, got -3"),
    ("bad-clip", ["trainer.gradient_clip_val=-1"], None, "trainer.gradient_clip_val must be"),
    ("nan-policy", ["nan_policy=ignore"], None, "nan_policy must be stop or skip"),
    ("monitor-mode", ["monitor.mode=up"], None, "monitor.mode must be min or max"),
    ("too-many-devices", ["trainer.devices=4096"], None, "trainer.devices=4096 asks for more"),
    ("no-gpu", ["trainer.accelerator=gpu"], None, "trainer.accelerator=gpu but this machine"),
    ("missing-ckpt", ["ckpt_path={x}/none.ckpt"], None, "none.ckpt does not exist"),
    ("not-a-ckpt", ["ckpt_path={x}"], _not_a_checkpoint, "is not a readable checkpoint"),
    ("code-in-ckpt", ["ckpt_path={x}"], _pickled_code, "is not a readable checkpoint"),
    (
        "other-model-ckpt",
        ["ckpt_path={x}"],
        _other_model,
        "was trained with model.cell=gru, model.hidden_size=8; "
        "this run has model.cell=lstm, model.hidden_size=64",
    ),
    ("resume-nothing", ["resume=true", "hydra.run.dir={x}"], _empty_run, "resume=true but"),
    (
        "unwritable-output",
        ["hydra.run.dir={x}"],
        _file_as_folder,
        "cannot write the output folder",
    ),
    ("seed-negative", ["seed=-1"], None, "seed must be an integer from 0 to 4294967295, got -1"),
    (
        "nan-skip-limit",
        ["nan_skip_limit=0"],
        None,
        "nan_skip_limit must be a positive integer or null, got 0",
    ),
    ("seed-too-big", ["seed=4294967296"], None, "seed must be an integer from 0 to 4294967295"),
    (
        "val-check-interval-0",
        ["trainer.val_check_interval=0"],
        None,
        "trainer.val_check_interval must be a positive integer (training steps), a fraction",
    ),
    ("val-check-interval-2.5", ["trainer.val_check_interval=2.5"], None, "got 2.5"),
    (
        "monitor-unknown",
        ["monitor.metric=val/nonexistent"],
        None,
        "monitor.metric=val/nonexistent is not a metric this run logs; choose one of val/acc",
    ),
    (
        "plateau-monitor",
        ["scheduler=plateau", "+scheduler.monitor=val/nope"],
        None,
        "scheduler.monitor is not an option of ReduceLROnPlateau",
    ),
    (
        "optimizer-option",
        ["+optimizer.betas_typo=1"],
        None,
        "optimizer.betas_typo is not an option of Adam",
    ),
    (
        "test-without-checkpoint",
        ["train=false"],
        None,
        "train=false only tests a trained net: give ckpt_path=<checkpoint>",
    ),
    ("empty-run-dir", ["hydra.run.dir="], None, "hydra.run.dir is empty"),
    ("dropout-nan", ["model.dropout=nan"], None, "model.dropout must be in [0, 1), got nan"),
    ("lr-inf", ["optimizer.lr=inf"], None, "optimizer.lr must be a positive number, got inf"),
    ("embedding-0", ["model.embedding_dim=0"], None, "model.embedding_dim must be a positive"),
    ("init-std-0", ["model.init=normal", "model.init_std=0"], None, "model.init_std must be"),
    ("cell-typo", ["model.cell=lstn"], None, "model.cell must be one of rnn, lstm, gru"),
    ("n-train-0", ["data.n_train=0"], None, "data.n_train must be a positive integer, got 0"),
    ("workers-negative", ["data.num_workers=-1"], None, "data.num_workers must be a non-neg"),
    ("min-len-too-long", ["data.min_len=20"], None, "data.min_len must be in 1..data.seq_len=12"),
    ("adding-T-1", ["data=adding", "data.T=1"], None, "data.T must be at least 2"),
    (
        "label-smoothing",
        ["+task.label_smoothing=1"],
        None,
        "task.label_smoothing must be in [0, 1)",
    ),
    ("limit-negative", ["+trainer.limit_val_batches=-1"], None, "trainer.limit_val_batches must"),
    ("log-every-0", ["trainer.log_every_n_steps=0"], None, "trainer.log_every_n_steps must be"),
]

# data sets added alongside this table; the documented keys are data.data_dir and data.path
TEXT_CASES = [
    (
        "names-missing-dir",
        ["data=names", "data.data_dir={x}/nowhere"],
        None,
        "nowhere does not exist",
    ),
    (
        "names-empty-dir",
        ["data=names", "data.data_dir={x}"],
        _empty_dir,
        "holds no <Language>.txt files",
    ),
    (
        "names-empty-file",
        ["data=names", "data.data_dir={x}"],
        _names_file(b"\n\n"),
        "English.txt holds no names",
    ),
    (
        "names-undecodable",
        ["data=names", "data.data_dir={x}"],
        _names_file(b"\xff\xfe\xfa\x00bad\n"),
        "English.txt is not UTF-8 text",
    ),
    (
        "chars-missing-file",
        ["data=chars", "data.path={x}/none.txt"],
        None,
        "none.txt does not exist",
    ),
    (
        "chars-too-short",
        ["data=chars", "data.path={x}"],
        _short_text,
        "short.txt has 5 characters, fewer than one chunk",
    ),
]


def _has_group_option(group: str, option: str) -> bool:
    from rnnlab.config import CONF_DIR

    return (CONF_DIR / group / f"{option}.yaml").is_file()


def _params():
    for case in CASES:
        yield pytest.param(*case, id=case[0])
    for case in TEXT_CASES:
        option = case[1][0].split("=", 1)[1]
        marks = (
            []
            if _has_group_option("data", option)
            else [pytest.mark.xfail(reason=f"data={option} is not in this checkout", strict=False)]
        )
        yield pytest.param(*case, id=case[0], marks=marks)


def run_main_in_process(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """``python train.py args`` in this process: the exit code and everything printed."""
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("RNNLAB_CONDENSED_ERRORS", raising=False)
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally_close_run_logging()
    out = capsys.readouterr()
    return code, out.out + out.err


def finally_close_run_logging() -> None:
    """Hydra pointed the root logger at this test's streams and run folder: let them go."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


@pytest.mark.parametrize(("case", "overrides", "prepare", "sentence"), list(_params()))
def test_bad_input_is_one_sentence_and_a_non_zero_exit(
    case, overrides, prepare, sentence, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # a run that wrongly went ahead in the current folder stays here
    x = prepare(tmp_path) if prepare else str(tmp_path)
    args = [o.replace("{x}", x) for o in overrides]
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    base = TINY
    if any(a.startswith("data=") for a in args):  # another data set: keep only the run length
        base = [o for o in TINY if not o.startswith("data")]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    paths = sorted(tmp_path.rglob("*"))
    code, printed = run_main_in_process([*base, *QUIET, *args], monkeypatch, capsys)
    assert code == 2, printed
    errors = [line for line in printed.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, printed
    assert sentence in errors[0]
    assert printed.count(errors[0][len("error: ") :]) == 1, printed  # said once, not also logged
    assert "Traceback" not in printed
    assert "search path" not in printed
    # nothing trained, nothing that existed before changed, and no folder left for the run
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    assert not (tmp_path / "run" / "metrics.json").exists()
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime, path
    assert sorted(tmp_path.rglob("*")) == paths, printed


def test_a_failed_resume_leaves_the_runs_files_as_they_were(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    code, printed = run_main_in_process(
        [*TINY, *QUIET, f"hydra.run.dir={run}"], monkeypatch, capsys
    )
    assert code == 0, printed
    kept = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.log"}
    assert run / ".hydra" / "config.yaml" in kept and run / "checkpoints" / "last.ckpt" in kept
    code, printed = run_main_in_process(
        [*TINY, *QUIET, f"hydra.run.dir={run}", "resume=true", "model.hidden_size=32"],
        monkeypatch,
        capsys,
    )
    assert code == 2
    assert "model.hidden_size=64; this run has model.hidden_size=32" in printed
    for path, content in kept.items():
        assert path.read_bytes() == content, path


def test_bad_input_exits_2_with_one_line_from_a_real_process(tmp_path):
    result = run_cli(["optimizer.lr=abc", f"hydra.run.dir={tmp_path / 'run'}"], timeout=180)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: optimizer.lr must be a positive number, got 'abc'"
    )
    assert "Traceback" not in result.stderr + result.stdout


def test_hydra_full_error_shows_the_whole_error(tmp_path, monkeypatch):
    from hydra.errors import MissingConfigException

    monkeypatch.setattr(sys, "argv", ["train.py", "model=lstmm", f"hydra.run.dir={tmp_path}"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.delenv("RNNLAB_CONDENSED_ERRORS", raising=False)
    with pytest.raises(MissingConfigException, match="Available options in 'model'"):
        cli.main()


@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[1] / "scripts" / "predict.py").is_file(),
    reason="scripts/predict.py is not in this checkout",
)
def test_predict_with_no_input_says_what_it_needs():
    result = run_cli([], script="scripts/predict.py", timeout=180)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished run folder (``.hydra/``, train.log, run_info.json, metrics.json, checkpoints)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["train.py", *TINY, *QUIET, f"hydra.run.dir={run}"])
        mp.delenv("HYDRA_FULL_ERROR", raising=False)
        mp.delenv("RNNLAB_CONDENSED_ERRORS", raising=False)
        try:
            cli.main()
        finally:
            finally_close_run_logging()
    assert (run / "metrics.json").is_file() and (run / "run_info.json").is_file()
    return run


def _state(folder: Path) -> dict[Path, tuple[bytes, int]]:
    return {
        p: (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns if p.is_file() else 0)
        for p in folder.rglob("*")
    }


@pytest.mark.parametrize(
    ("overrides", "sentence"),
    [
        (["monitor.metric=val/nonexistent"], "monitor.metric=val/nonexistent is not a metric"),
        (["seed=-1"], "seed must be an integer from 0 to 4294967295, got -1"),
        (["trainer.val_check_interval=0"], "trainer.val_check_interval must be"),
        (["scheduler=plateau", "+scheduler.monitor=val/nope"], "scheduler.monitor is not an"),
        (["train=false"], "train=false only tests a trained net"),
        (["ckpt_path=/nowhere/x.ckpt"], "checkpoint /nowhere/x.ckpt does not exist"),
    ],
    ids=["monitor", "seed", "val-check-interval", "plateau-monitor", "test-only", "no-ckpt"],
)
def test_bad_input_leaves_a_finished_run_folder_as_it_was(
    overrides, sentence, finished_run, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)  # copy2: the same bytes and times
    before = _state(run)
    code, printed = run_main_in_process(
        [*TINY, *QUIET, f"hydra.run.dir={run}", *overrides], monkeypatch, capsys
    )
    assert code == 2, printed
    assert [line for line in printed.splitlines() if line.startswith("error: ")] == [
        line for line in printed.splitlines() if sentence in line
    ], printed
    assert _state(run) == before  # the same files, bytes and modification times


def test_a_run_refused_after_it_started_leaves_no_folder(tmp_path, monkeypatch, capsys):
    # the default outputs/<date>/<time> folder, and a named folder in folders made for it
    for where in (f"paths.log_dir={tmp_path / 'logs'}", f"hydra.run.dir={tmp_path}/new/a/run"):
        code, printed = run_main_in_process(
            [*TINY, *QUIET, where, "ckpt_path=/nowhere/x.ckpt"], monkeypatch, capsys
        )
        assert code == 2, printed
        assert "error: checkpoint /nowhere/x.ckpt does not exist" in printed
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("script", "args", "sentence"),
    [
        ("train.py", ["model.hidden_size=0"], "model.hidden_size must be a positive integer"),
        ("train.py", ["seed=-1"], "seed must be an integer from 0 to 4294967295"),
        ("train.py", ["data.batch_size=0"], "data.batch_size must be a positive integer"),
        ("train.py", ["train=false"], "train=false only tests a trained net"),
        (
            "scripts/predict.py",
            ["ckpt_path=/nowhere/x.ckpt", "temperature=nan"],
            "temperature must be a non-negative number (0: the likeliest), got nan",
        ),
    ],
    ids=["hidden-size", "seed", "batch-size", "test-only", "predict-temperature"],
)
def test_a_bad_value_is_refused_before_torch_is_imported(script, args, sentence, tmp_path):
    run = tmp_path / "run"
    if script == "train.py":
        args = [*args, f"hydra.run.dir={run}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    # -X importtime prints one line per imported module to stderr: "import time: ... | name"
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "omegaconf" in imported  # the report was read
    assert not {"torch", "lightning", "numpy"} & imported
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and sentence in errors[0], result.stderr[-2000:]
    assert not run.exists()


def test_a_checkpoint_mismatch_names_only_the_keys_that_differ(tmp_path):
    from conftest import make_cfg
    from omegaconf import OmegaConf

    from rnnlab.checkpoints import check_weights_fit
    from rnnlab.errors import RnnlabError

    stored = make_cfg(["experiment=names", f"data.data_dir={'/very/long/path' * 10}"], tmp_path)
    current = make_cfg(["data=pattern", "model=gru"], tmp_path)
    checkpoint = {
        "state_dict": {"weight": torch.zeros(3, 3)},
        "rnnlab": {"config": OmegaConf.to_container(stored)},
    }
    with pytest.raises(RnnlabError) as e:
        check_weights_fit("x.ckpt", checkpoint, torch.nn.Linear(2, 2), current)
    message = str(e.value)
    assert "data._target_=rnnlab.data.NamesDataModule" in message
    assert "model.hidden_size=256" in message and "model.hidden_size=64" in message
    assert "data.accents" not in message and "data.seq_len" not in message
    assert len(message) < 300, message
