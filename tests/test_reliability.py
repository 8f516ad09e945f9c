"""Nothing lost: exact resume, graceful stops, atomic checkpoints, the NaN guard, run info."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from conftest import ROOT, make_cfg, run_cli

from rnnlab.checkpoints import AtomicCheckpointIO, load_checkpoint
from rnnlab.data.resumable import ResumableLoader
from rnnlab.errors import RunStopped
from rnnlab.records import git_info
from rnnlab.review import event_dir
from rnnlab.train import train

# 4 batches an epoch, 2 epochs; two stacked layers with dropout, so the RNG matters too
RUN = [
    "data=pattern",
    "data.n_train=128",
    "data.n_val=32",
    "data.n_test=32",
    "data.batch_size=32",
    "model.hidden_size=16",
    "model.num_layers=2",
    "model.dropout=0.3",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "trainer.accelerator=cpu",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


class SendSignal(L.Callback):
    """Sends ``signum`` to this process after training step ``step``."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def same_results(a: dict, b: dict) -> bool:
    """Equal validation and test metrics (a resumed epoch's training mean covers fewer batches)."""
    keep = ("val/", "test/")
    return {k: v for k, v in a.items() if k.startswith(keep)} == {
        k: v for k, v in b.items() if k.startswith(keep)
    }


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same run, never stopped."""
    run = tmp_path_factory.mktemp("reference")
    metrics = train(make_cfg(RUN, run))
    return run, metrics


@pytest.mark.parametrize(("signum", "step", "exit_code"), [(signal.SIGTERM, 5, 143)])
def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(
    uninterrupted, tmp_path, signum, step, exit_code
):
    reference, reference_metrics = uninterrupted
    with pytest.raises(RunStopped) as stop:
        train(make_cfg(RUN, tmp_path), extra_callbacks=[SendSignal(step, signum)])
    # noted after step 5, acted on after the next batch: mid-epoch 1
    message = str(stop.value)
    assert stop.value.exit_code == exit_code
    assert message.startswith("stopped by SIGTERM at step 6 (epoch 1); saved ")
    assert f"resume with: python train.py ckpt_path={tmp_path}/checkpoints/last.ckpt" in message
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["global_step"] == 6
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 6

    metrics = train(make_cfg([*RUN, "resume=true"], tmp_path))
    assert same_results(metrics, reference_metrics)
    assert max_difference(
        weights(reference / "checkpoints" / "last.ckpt"),
        weights(tmp_path / "checkpoints/last.ckpt"),
    ) == pytest.approx(0.0, abs=0.0)

    # TensorBoard: one curve in the same folder, every step once
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(event_dir(tmp_path))).Reload()
    steps = [e.step for e in events.Scalars("train/loss_step")]
    assert steps == list(range(8))
    assert [e.step for e in events.Scalars("val/acc")] == [3, 7]
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "completed"

    # the run folder records the code it ran: the commit, and whether the tree was dirty
    info = json.loads((tmp_path / "run_info.json").read_text())
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True)
    if head.returncode == 0:
        assert info["git_commit"] == record["git_commit"] == head.stdout.decode().strip()
        assert isinstance(info["git_dirty"], bool) and record["git_dirty"] == info["git_dirty"]
    assert info["torch"] == torch.__version__


def test_first_ctrl_c_at_an_epoch_end_saves_and_resumes_exactly(uninterrupted, tmp_path):
    reference, reference_metrics = uninterrupted
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the tests run in the background
    with pytest.raises(RunStopped) as stop:
        train(make_cfg(RUN, tmp_path), extra_callbacks=[SendSignal(4, signal.SIGINT)])
    assert stop.value.exit_code == 130
    # the epoch's last batch: the stop waits for the epoch's end and its checkpoint
    assert str(stop.value).startswith("stopped by Ctrl-C at step 4 (epoch 1)")
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert signal.getsignal(signal.SIGINT) is before  # the handler is given back

    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    metrics = train(make_cfg([*RUN, f"ckpt_path={ckpt}"], tmp_path))
    assert same_results(metrics, reference_metrics)
    assert max_difference(weights(reference / "checkpoints" / "last.ckpt"), weights(ckpt)) == 0.0


@pytest.mark.slow  # a second Python with torch and Lightning, then a resume
def test_sigkill_then_resume_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    """A real `python train.py` killed with SIGKILL once its first last.ckpt exists."""
    reference, reference_metrics = uninterrupted
    last = tmp_path / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    slow = [*RUN, "trainer.max_epochs=50"]  # killed long before its end
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *slow, f"hydra.run.dir={tmp_path}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert load_checkpoint(last)["global_step"] >= 4
    assert not (tmp_path / "metrics.json").exists()

    metrics = train(make_cfg([*RUN, "resume=true"], tmp_path))
    assert same_results(metrics, reference_metrics)
    assert max_difference(weights(reference / "checkpoints" / "last.ckpt"), weights(last)) == 0.0


def test_a_write_that_dies_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "rnnlab": {}}, path)
    real_save = torch.save

    def dies_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(40)  # half a file on disk
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "rnnlab": {}}, path)
    monkeypatch.undo()
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_a_process_killed_inside_a_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    code = (
        "import sys, time, torch\n"
        "from rnnlab.checkpoints import atomic_torch_save\n"
        "path = __import__('pathlib').Path(sys.argv[1])\n"
        "atomic_torch_save({'w': torch.ones(3)}, path)\n"
        "real = torch.save\n"
        "def slow(obj, f, *a, **k):\n"
        "    real(obj, f, *a, **k); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        "torch.save = slow\n"
        "atomic_torch_save({'w': torch.zeros(3)}, path)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "writing"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".last.ckpt.")  # never read


def _inject_nan_at(step: int) -> L.Callback:
    class InjectNaN(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == step:
                batch["x"][0, 0] = float("nan")

    return InjectNaN()


def test_a_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    with pytest.raises(RunStopped) as stop:
        train(make_cfg(RUN, tmp_path), extra_callbacks=[_inject_nan_at(6)])
    assert stop.value.exit_code == 3
    assert str(stop.value) == (
        "the training loss became nan at step 6 (epoch 1); the last good checkpoint is "
        f"{tmp_path}/checkpoints/last.ckpt (nan_policy=skip skips such batches instead)"
    )
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "non_finite_loss"


def test_nan_policy_skip_skips_the_batch_and_counts_it(tmp_path):
    metrics = train(
        make_cfg([*RUN, "nan_policy=skip"], tmp_path),
        extra_callbacks=[_inject_nan_at(3)],
    )
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert torch.isfinite(torch.tensor(metrics["train/loss_epoch"]))
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 8  # Lightning counts the skipped step, which changes nothing
    assert all(torch.isfinite(w).all() for w in ckpt["state_dict"].values())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "completed" and record["skipped_batches"] == 1
    events = EventAccumulator(str(event_dir(tmp_path))).Reload()
    # logged for the epoch that skipped one batch
    assert [(e.step, e.value) for e in events.Scalars("train/skipped_batches")] == [(3, 1.0)]


def test_nan_policy_skip_stops_a_run_that_never_recovers(tmp_path):
    # a learning rate of 1e30 without clipping: after the first step every loss is inf or NaN
    result = run_cli(
        [
            "data=adding",
            "data.T=10",
            "data.n_train=256",
            "data.n_val=32",
            "data.n_test=32",
            "data.batch_size=32",
            "model.hidden_size=16",
            "optimizer=sgd",
            "optimizer.lr=1e30",
            "trainer.gradient_clip_val=null",
            "trainer.max_epochs=3",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "logger=none",
            "nan_policy=skip",
            "nan_skip_limit=5",
            f"hydra.run.dir={tmp_path}",
        ]
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert (
        "error: the training loss was NaN or infinite on 5 batches in a row, the last at step 5 "
        "(epoch 0), and nan_policy=skip skipped them all (nan_skip_limit=5); no checkpoint was "
        "saved before"
    ) in result.stderr
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "non_finite_loss"
    assert record["skipped_batches"] == 5 and record["global_step"] == 6


def test_a_huge_learning_rate_without_clipping_is_caught(tmp_path):
    cfg = make_cfg(
        [
            *RUN,
            "optimizer=sgd",
            "optimizer.lr=1e30",
            "trainer.gradient_clip_val=null",
            "data=adding",
            "data.T=10",
            "model.dropout=0.0",
            "trainer.max_epochs=1",
            "test=false",
        ],
        tmp_path,
    )
    with pytest.raises(RunStopped, match=r"the training loss became (nan|inf) at step \d+"):
        train(cfg)


def test_git_info_outside_a_repository_is_empty_not_an_error(tmp_path):
    assert git_info(tmp_path) == {"git_commit": None, "git_dirty": None}


def test_the_resumable_loader_skips_exactly_the_batches_already_seen():
    from rnnlab.data.base import TensorBatches

    data = TensorBatches(x=torch.arange(50.0))
    loader = ResumableLoader(data, batch_size=8, seed=3, collate_fn=lambda b: b["x"])
    loader.sampler.set_epoch(2)
    full = [b.tolist() for b in loader]
    assert len(full) == 7 and sorted(sum(full, [])) == list(range(50))
    it = iter(loader)
    next(it), next(it), next(it)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 3}
    fresh = ResumableLoader(data, batch_size=8, seed=3, collate_fn=lambda b: b["x"])
    fresh.load_state_dict(state)
    assert [b.tolist() for b in fresh] == full[3:]
    assert [b.tolist() for b in fresh] == full  # the skip applies once
    loader.sampler.set_epoch(3)
    assert [b.tolist() for b in loader] != full  # another epoch, another order


class CopyLastAtEpochStart(L.Callback):
    """Keeps a copy of the epoch-0 last.ckpt, as a SIGKILL in epoch 1 would leave it."""

    def __init__(self, target) -> None:
        self.target = target

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            import shutil

            trainer.strategy.checkpoint_io.wait()  # epoch 0's last.ckpt is written off this thread
            shutil.copy(self.target.parent / "last.ckpt", self.target)


def test_resuming_from_an_older_checkpoint_logs_every_step_once(uninterrupted, tmp_path):
    reference, reference_metrics = uninterrupted
    older = tmp_path / "checkpoints" / "epoch0.ckpt"
    with pytest.raises(RunStopped):
        train(
            make_cfg(RUN, tmp_path),
            extra_callbacks=[CopyLastAtEpochStart(older), SendSignal(5, signal.SIGTERM)],
        )
    # steps 4 and 5 were logged after the older checkpoint, and are logged again on resume.
    # TensorBoard reads a folder's event files in name order, and a name is the second it was
    # made, then the process id and a per-process counter (as text: "10" before "9"); a resume
    # in the same process within the same second could sort before the run it continues
    time.sleep(1.0 - time.time() % 1.0 + 0.05)
    metrics = train(make_cfg([*RUN, f"ckpt_path={older}"], tmp_path))
    assert same_results(metrics, reference_metrics)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(event_dir(tmp_path))).Reload()
    assert [e.step for e in events.Scalars("train/loss_step")] == list(range(8))
    assert [e.step for e in events.Scalars("val/acc")] == [3, 7]
    reference_events = EventAccumulator(str(event_dir(reference))).Reload()
    assert [e.value for e in events.Scalars("train/loss_step")] == [
        e.value for e in reference_events.Scalars("train/loss_step")
    ]


def test_eval_of_a_checkpoint_under_another_model_says_what_differs(uninterrupted):
    from rnnlab.errors import RnnlabError
    from rnnlab.evaluate import evaluate

    reference, _ = uninterrupted
    ckpt = reference / "checkpoints" / "last.ckpt"
    with pytest.raises(RnnlabError) as error:
        evaluate(ckpt, ["model.hidden_size=32", "model.cell=gru"])
    assert str(error.value) == (
        f"checkpoint {ckpt} was trained with model.cell=lstm, model.hidden_size=16; "
        "this run has model.cell=gru, model.hidden_size=32, so its weights do not fit"
    )


def test_last_checkpoint_every_n_steps(tmp_path):
    steps = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            last = tmp_path / "checkpoints" / "last.ckpt"
            trainer.strategy.checkpoint_io.wait()  # the writes queued so far, on disk
            if last.exists():
                steps.append(load_checkpoint(last)["global_step"])

    train(
        make_cfg([*RUN, "callbacks.last_checkpoint.every_n_train_steps=3", "test=false"], tmp_path),
        extra_callbacks=[Watch()],
    )
    # saved after steps 3 and 6 (mid-epoch) and at the epoch ends (4 and 8)
    assert sorted(set(steps)) == [3, 4, 6]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 8


# ---------------------------------------------------------------- names: killed, then resumed

# 120 made-up names: 96 to train on in batches of 16, 6 steps an epoch, 3 epochs; the best
# recipe's 2-layer GRU with dropout, so the RNG matters too; class-balanced draws
NAMES_STEPS = 6
NAMES_RUN = [
    "experiment=names",
    "data.batch_size=16",
    "data.balance=sampler",
    "model.hidden_size=16",
    "model.embedding_dim=8",
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
    "callbacks.last_checkpoint.every_n_train_steps=1",  # a last.ckpt after every step
]


def kill_at_a_checkpoint(args: list[str], run, steps_per_epoch: int, mid_epoch: bool) -> int:
    """Start ``python train.py <args>`` writing into ``run`` and SIGKILL it once its last.ckpt
    is one saved part-way through an epoch (``mid_epoch``) or at an epoch's end; that step.

    The run is frozen (SIGSTOP) while each new last.ckpt is read, so the one read is the one
    the kill leaves.
    """
    last = run / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen = None
    try:
        deadline = time.monotonic() + 240
        while child.poll() is None and time.monotonic() < deadline:
            if last.exists() and (stat := last.stat()) and (stat.st_ino, stat.st_mtime_ns) != seen:
                child.send_signal(signal.SIGSTOP)
                stat = last.stat()
                seen = (stat.st_ino, stat.st_mtime_ns)
                step = load_checkpoint(last)["global_step"]
                if (step % steps_per_epoch != 0) == mid_epoch:
                    child.send_signal(signal.SIGKILL)
                    child.wait(timeout=60)
                    return step
                child.send_signal(signal.SIGCONT)
            time.sleep(0.002)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=60)
    pytest.fail(f"the run ended (exit {child.returncode}) before the checkpoint it waited for")


def names_metrics(run) -> dict:
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "completed"
    return record


@pytest.fixture(scope="module")
def toy_names(tmp_path_factory):
    from rnnlab.data.names import write_toy_names

    return write_toy_names(tmp_path_factory.mktemp("toy") / "names", per_language=60)


@pytest.fixture(scope="module")
def names_reference(toy_names, tmp_path_factory):
    """The names run, never stopped."""
    run = tmp_path_factory.mktemp("names_reference")
    result = run_cli([*NAMES_RUN, f"data.data_dir={toy_names}", f"hydra.run.dir={run}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run


@pytest.mark.parametrize(
    "mid_epoch",
    [True, pytest.param(False, marks=pytest.mark.slow)],  # a killed run and a resume each
    ids=["mid-epoch", "epoch-end"],
)
def test_names_run_killed_then_resumed_equals_an_uninterrupted_run(
    toy_names, names_reference, tmp_path, mid_epoch
):
    args = [*NAMES_RUN, f"data.data_dir={toy_names}"]
    step = kill_at_a_checkpoint(args, tmp_path, NAMES_STEPS, mid_epoch)
    assert (step % NAMES_STEPS != 0) == mid_epoch
    assert not (tmp_path / "metrics.json").exists()

    result = run_cli([*args, f"hydra.run.dir={tmp_path}", "resume=true"])
    assert result.returncode == 0, result.stderr[-3000:]
    resumed, reference = names_metrics(tmp_path), names_metrics(names_reference)
    assert resumed["global_step"] == reference["global_step"] == 3 * NAMES_STEPS
    assert same_results(resumed["metrics"], reference["metrics"])
    last = "checkpoints/last.ckpt"
    assert max_difference(weights(names_reference / last), weights(tmp_path / last)) == 0.0
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))  # a write the kill cut short


@pytest.mark.slow  # three runs on the real set (about 17,000 names)
def test_names_run_on_the_real_set_killed_mid_epoch_then_resumed_is_exact(shared_data, tmp_path):
    args = [
        "experiment=names",
        f"data.data_dir={shared_data / 'names'}",
        "model.hidden_size=16",
        "model.embedding_dim=8",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=30",
        "trainer.deterministic=true",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "logger=none",
        "callbacks.last_checkpoint.every_n_train_steps=7",
    ]
    reference = tmp_path / "reference"
    result = run_cli([*args, f"hydra.run.dir={reference}"])
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    kill_at_a_checkpoint(args, run, 30, mid_epoch=True)
    result = run_cli([*args, f"hydra.run.dir={run}", "resume=true"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert same_results(names_metrics(run)["metrics"], names_metrics(reference)["metrics"])
    last = "checkpoints/last.ckpt"
    assert max_difference(weights(reference / last), weights(run / last)) == 0.0


@pytest.mark.parametrize("balanced", [False, True])
def test_the_names_loader_resumes_its_epoch_and_skips_the_batches_served(tmp_path, balanced):
    from rnnlab.data import NamesDataModule
    from rnnlab.data.names import write_toy_names

    folder = write_toy_names(tmp_path / "toy", per_language=60)

    def loader():
        dm = NamesDataModule(folder, batch_size=16, balance="sampler" if balanced else "none")
        return dm.train_dataloader()

    def names(batches) -> list[list[int]]:
        return [b["x"][:, 0].tolist() + b["y"].tolist() for b in batches]

    first = loader()
    # Lightning sets the epoch through the batch sampler's sampler
    from lightning.fabric.utilities.data import _set_sampler_epoch

    _set_sampler_epoch(first, 2)
    full = names(first)
    assert len(full) == len(first) == 6
    _set_sampler_epoch(first, 3)
    assert names(first) != full  # another epoch, another order
    _set_sampler_epoch(first, 2)
    it = iter(first)
    next(it), next(it)
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 2}
    fresh = loader()  # a new process: epoch 0 until told otherwise
    fresh.load_state_dict(state)
    assert names(fresh) == full[2:]
    _set_sampler_epoch(fresh, 2)
    assert names(fresh) == full  # the skip applies once


def test_a_run_removes_the_unfinished_checkpoint_files_a_killed_write_left(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = [folder / ".last.ckpt.k2v9x1.tmp", folder / ".best.ckpt.a7_q0z.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    kept = [folder / "notes.tmp", folder / "epoch0.ckpt"]
    for path in kept:
        path.write_bytes(b"not ours to remove")
    train(make_cfg([*RUN, "trainer.max_epochs=1", "test=false", "logger=none"], tmp_path))
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.ckpt",
        "epoch0.ckpt",
        "last.ckpt",
        "notes.tmp",
    ]


def test_a_full_disk_stops_with_one_sentence_and_keeps_the_older_checkpoints(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a small disk to fill is a tmpfs, and mounting one needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    # room for the first epoch's last.ckpt (about 830 KiB; best.ckpt of the same epoch is a hard
    # link to it), not for the second epoch's beside it
    mount = ["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(disk)]
    mounted = subprocess.run(mount, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        run = disk / "run"
        result = run_cli(
            [
                "data=pattern",
                "data.n_train=64",
                "data.n_val=32",
                "data.n_test=32",
                "data.batch_size=32",
                "model.hidden_size=128",
                "trainer.max_epochs=3",
                "trainer.accelerator=cpu",
                "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false",
                "logger=none",
                f"hydra.run.dir={run}",
            ]
        )
        assert result.returncode == 1, result.stderr[-3000:]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith("error: the disk is full: ")
        folder = run / "checkpoints"
        sentence = f"could not be written to {folder}, where the older checkpoints are intact"
        assert sentence in errors[0]
        # the first epoch's checkpoints, whole; no temporary file left
        assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2
        assert load_checkpoint(run / "checkpoints" / "best.ckpt")["global_step"] == 2
        assert not list((run / "checkpoints").glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
