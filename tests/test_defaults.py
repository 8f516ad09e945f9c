"""What a user gets, with nothing turned off: DDP with every default callback, and a terminal.

Other tests turn the progress bar and model summary off for speed (``conftest.QUIET``); these keep
the ``callbacks`` and ``logger`` groups as shipped: the rich progress bar, the model summary, both
checkpoints, early stopping, the learning-rate monitor, TensorBoard, the classification report
(names), the text sample (character LMs), and the insight callbacks where asked for. Output goes
to a pipe, and once to a pseudo-terminal, where the rich bar really draws.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from rnnlab.data.names import write_toy_names
from rnnlab.review import event_dir

TEXT = "the cat sat on the mat. a dog ran in the fog. " * 60  # 2760 characters


def small_data(kind: str, folder: Path) -> list[str]:
    """Overrides for a seconds-long run of ``kind`` (adding, names or chars)."""
    if kind == "adding":
        return ["data.T=10", "data.n_train=256", "data.n_val=64", "data.n_test=64"]
    if kind == "names":
        names = write_toy_names(folder / "names", per_language=60)
        return ["data=names", f"data.data_dir={names}", "data.batch_size=16", "model=gru"]
    if kind == "chars":
        text = folder / "text.txt"
        text.write_text(TEXT, encoding="utf-8")
        return ["data=chars", f"data.path={text}", "data.seq_len=32", "data.batch_size=8"]
    raise ValueError(kind)


SMALL = ["model.hidden_size=16", "trainer.max_epochs=2", "data.batch_size=16"]


def events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(event_dir(run)), size_guidance={"images": 0}).Reload()


def check_run(run: Path, kind: str, insight: bool) -> None:
    """Every default callback did its part, once, from process zero."""
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 2, record
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    log = (run / "train.log").read_text()
    assert log.count("Run directory:") == 1 and "GLOBAL_RANK: 1" not in log
    # the epoch lines, whatever the screen showed, once (process zero)
    assert log.count("Epoch 0/1  step ") == 1 and log.count("Epoch 1/1  step ") == 1, log
    tags = events(run).Tags()
    assert "lr-Adam" in tags["scalars"]  # the learning-rate monitor
    if kind == "names":
        assert len(events(run).Images("confusion_matrix/val")) == 2  # once per validation
        assert any(t.startswith("val/predictions") for t in tags["tensors"]), tags["tensors"]
    if kind == "chars":
        assert any("sample" in t for t in tags["tensors"]), tags["tensors"]
        assert record["metrics"]["test/loss"] > 0
    if insight:
        assert "grad_flow/norms" in tags["images"], tags["images"]
        assert "grad_flow/log10_ratio" in tags["scalars"]
        assert any(t.startswith("hidden/") for t in tags["images"]), tags["images"]


def check_output(result: subprocess.CompletedProcess, runs: int) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert result.stdout.count("Run directory:") == runs
    assert "Epoch 1/1" in result.stdout  # the progress bar, once per run, from process zero
    assert "Total params" in result.stdout  # the model summary


@pytest.mark.parametrize(
    ("kind", "insight"),
    [
        pytest.param("names", True, id="names"),
        pytest.param("chars", False, id="chars", marks=pytest.mark.slow),
        # adding: the README test runs `python train.py trainer=ddp_cpu` as printed
    ],
)
def test_a_ddp_run_with_every_default_callback(kind, insight, tmp_path):
    overrides = ["trainer=ddp_cpu", *SMALL, *small_data(kind, tmp_path)]
    if insight:
        overrides.append("insight=all")
    result = run_cli([*overrides, f"hydra.run.dir={tmp_path / 'run'}"])
    check_output(result, runs=1)
    check_run(tmp_path / "run", kind, insight)


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("chars", id="chars"),
        pytest.param("adding", id="adding", marks=pytest.mark.slow),
        pytest.param("names", id="names", marks=pytest.mark.slow),
    ],
)
def test_a_ddp_sweep_of_two_trials_with_every_default_callback(kind, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [*SMALL, *small_data(kind, tmp_path)]
    result = run_cli(
        [
            "-m",
            "trainer=ddp_cpu",
            *overrides,
            "seed=1,2",
            f"hydra.sweep.dir={sweep}",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        timeout=600,
    )
    check_output(result, runs=2)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert not (tmp_path / "logs").exists()  # no worker made a run directory of its own
    for trial in ("0", "1"):
        check_run(sweep / trial, kind, insight=False)


def run_in_terminal(args: list[str], columns: int = 100, timeout: float = 300) -> tuple[int, str]:
    """Run ``python train.py args`` with a pseudo-terminal as its stdout and stderr."""
    main, child = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": "40"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.pop("HYDRA_FULL_ERROR", None)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        env=env,
        close_fds=True,
    )
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                data = os.read(main, 65536)
            except OSError:  # the terminal closed: every process writing to it has ended
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    else:
        process.kill()
    os.close(main)
    return process.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize(
    "trainer",
    [
        pytest.param("default", id="one-process", marks=pytest.mark.slow),
        pytest.param("ddp_cpu", id="ddp_cpu"),
    ],
)
def test_in_a_terminal_the_rich_bar_draws_and_the_run_ends_well(trainer, tmp_path):
    run = tmp_path / "run"
    code, screen = run_in_terminal(
        [f"trainer={trainer}", *SMALL, *small_data("adding", tmp_path), f"hydra.run.dir={run}"]
    )
    assert code == 0, screen[-4000:]
    assert "Traceback" not in screen
    assert "\x1b[" in screen  # colours and cursor moves: rich drew a live display
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert re.search(r"Epoch 1/1 +━+ 16/16", plain), plain[-3000:]
    assert "Run directory:" in screen
    check_run(run, "adding", insight=False)


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job"]], ids=["help", "cfg"])
def test_help_and_cfg_import_neither_torch_nor_lightning(args):
    """Why `--help` and `--cfg job` take about two seconds: the heavy libraries stay unloaded."""
    result = run_cli(args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "hydra" in imported and "omegaconf" in imported  # the measurement itself works
    assert not {m for m in imported if m.split(".")[0] in ("torch", "lightning", "numpy")}


def test_help_into_a_pipe_that_closes_early_says_nothing_more():
    """`python train.py --help | head -1`: the reader closed the pipe, which is no error."""
    result = subprocess.run(
        ["bash", "-c", f"{sys.executable} {ROOT / 'train.py'} --help | head -1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.stdout.startswith("rnnlab: train recurrent sequence models")
    assert result.stderr == ""
