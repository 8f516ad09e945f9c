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
from conftest import ROOT, make_cfg

from rnnlab.data.resumable import ResumableLoader
from rnnlab.reliability import (
    AtomicCheckpointIO,
    RunStopped,
    git_info,
    load_checkpoint,
)
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

    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
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
        "from rnnlab.atomic import atomic_torch_save\n"
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

    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    # logged for the epoch that skipped one batch
    assert [(e.step, e.value) for e in events.Scalars("train/skipped_batches")] == [(3, 1.0)]


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

            shutil.copy(self.target.parent / "last.ckpt", self.target)


def test_resuming_from_an_older_checkpoint_logs_every_step_once(uninterrupted, tmp_path):
    reference, reference_metrics = uninterrupted
    older = tmp_path / "checkpoints" / "epoch0.ckpt"
    with pytest.raises(RunStopped):
        train(
            make_cfg(RUN, tmp_path),
            extra_callbacks=[CopyLastAtEpochStart(older), SendSignal(5, signal.SIGTERM)],
        )
    # steps 4 and 5 were logged after the older checkpoint, and are logged again on resume
    metrics = train(make_cfg([*RUN, f"ckpt_path={older}"], tmp_path))
    assert same_results(metrics, reference_metrics)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/loss_step")] == list(range(8))
    assert [e.step for e in events.Scalars("val/acc")] == [3, 7]
    reference_events = EventAccumulator(str(reference / "tensorboard")).Reload()
    assert [e.value for e in events.Scalars("train/loss_step")] == [
        e.value for e in reference_events.Scalars("train/loss_step")
    ]


def test_eval_of_a_checkpoint_under_another_model_says_what_differs(uninterrupted):
    from rnnlab.config import RnnlabError
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
            if last.exists():
                steps.append(load_checkpoint(last)["global_step"])

    train(
        make_cfg([*RUN, "callbacks.last_checkpoint.every_n_train_steps=3", "test=false"], tmp_path),
        extra_callbacks=[Watch()],
    )
    # saved after steps 3 and 6 (mid-epoch) and at the epoch ends (4 and 8)
    assert sorted(set(steps)) == [3, 4, 6]
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 8
