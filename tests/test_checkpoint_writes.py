"""Checkpoint writes: best.ckpt and last.ckpt of the same epoch end are written once (one file,
two names), and the writes go to disk on a thread of their own, in order, failures raised."""

from __future__ import annotations

import errno
import logging
import os
import threading

import lightning as L
import pytest
import torch
from conftest import QUIET, make_cfg

from rnnlab import checkpoints
from rnnlab.checkpoints import AtomicCheckpointIO, load_checkpoint
from rnnlab.errors import DiskFull
from rnnlab.train import train

RUN = [
    "data=parity",
    "data.n_train=128",
    "data.n_val=64",
    "data.n_test=64",
    "data.batch_size=32",
    "model.hidden_size=8",
    "trainer.accelerator=cpu",
    "logger=none",
    "test=false",
    *QUIET,
]


def counting_writes(monkeypatch) -> list[str]:
    """The names of the checkpoints written (by the writer thread: runs write in the background)."""
    written: list[str] = []
    write = checkpoints.atomic_write_bytes

    def counted(data, path, mode=None):
        written.append(path.name)
        write(data, path, mode)

    monkeypatch.setattr(checkpoints, "atomic_write_bytes", counted)
    return written


def gated_writes(monkeypatch) -> threading.Event:
    """Hold every background write until the returned event is set."""
    gate = threading.Event()
    write = checkpoints.atomic_write_bytes

    def gated(data, path, mode=None):
        assert gate.wait(timeout=30), "the test never opened the gate"
        write(data, path, mode)

    monkeypatch.setattr(checkpoints, "atomic_write_bytes", gated)
    return gate


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("checkpoint-io")]


def test_best_and_last_of_an_epoch_end_are_one_write_and_one_file(tmp_path, monkeypatch):
    written = counting_writes(monkeypatch)
    # the monitored metric improves at least in the first epoch, so best.ckpt is saved then
    train(make_cfg([*RUN, "trainer.max_epochs=3", "callbacks.early_stopping=null"], tmp_path))
    assert written == ["last.ckpt"] * 3
    folder = tmp_path / "checkpoints"
    best, last = load_checkpoint(folder / "best.ckpt"), load_checkpoint(folder / "last.ckpt")
    assert last["global_step"] == 12 and best["global_step"] in (4, 8, 12)
    if best["global_step"] == 12:  # the last epoch was the best: the same file
        assert os.stat(folder / "best.ckpt").st_ino == os.stat(folder / "last.ckpt").st_ino
    else:  # an older epoch's file, kept when last.ckpt was replaced
        assert os.stat(folder / "best.ckpt").st_ino != os.stat(folder / "last.ckpt").st_ino
    for key, value in best["state_dict"].items():
        assert torch.isfinite(value).all(), key
    assert not list(folder.glob(".*.tmp"))


def test_a_best_checkpoint_inside_an_epoch_is_written_on_its_own(tmp_path, monkeypatch):
    written = counting_writes(monkeypatch)
    # validation every 2 of the epoch's 4 steps: the one at step 2 is not at an epoch's end
    train(make_cfg([*RUN, "trainer.max_epochs=1", "trainer.val_check_interval=2"], tmp_path))
    folder = tmp_path / "checkpoints"
    # step 2's best.ckpt is written (training goes on after it); step 4's, if better, is linked
    assert written == ["best.ckpt", "last.ckpt"]
    same_file = os.stat(folder / "best.ckpt").st_ino == os.stat(folder / "last.ckpt").st_ino
    assert load_checkpoint(folder / "best.ckpt")["global_step"] == (4 if same_file else 2)


@pytest.mark.parametrize("background", [True, False])
def test_held_checkpoints_are_linked_written_or_dropped_as_the_state_says(tmp_path, background):
    io = AtomicCheckpointIO(background=background)
    last, best = tmp_path / "last.ckpt", tmp_path / "best.ckpt"
    io.hold(last)
    io.save_checkpoint({"global_step": 5, "w": torch.ones(3)}, best)
    io.wait()
    assert not best.exists()  # held
    io.save_checkpoint({"global_step": 5, "w": torch.full((3,), 2.0)}, last)
    io.wait()
    assert os.stat(best).st_ino == os.stat(last).st_ino
    # another step's last.ckpt: the held checkpoint is written with its own state
    io.hold(last)
    io.save_checkpoint({"global_step": 7, "w": torch.zeros(3)}, best)
    io.save_checkpoint({"global_step": 8, "w": torch.ones(3)}, last)
    io.wait()
    assert torch.load(best, weights_only=True)["global_step"] == 7
    assert torch.load(last, weights_only=True)["global_step"] == 8
    # released (the epoch ended without last.ckpt): written; discarded: not
    io.hold(last)
    io.save_checkpoint({"global_step": 9}, best)
    io.release()
    io.wait()
    assert torch.load(best, weights_only=True)["global_step"] == 9
    io.hold(last)
    io.save_checkpoint({"global_step": 10}, best)
    io.discard()
    io.release()
    io.wait()
    assert torch.load(best, weights_only=True)["global_step"] == 9
    # not holding: every save is a write of its own
    io.save_checkpoint({"global_step": 11}, best)
    io.teardown()
    assert torch.load(best, weights_only=True)["global_step"] == 11
    assert not writer_threads()
    assert not list(tmp_path.glob(".*.tmp"))


def a_checkpoint(step: int) -> dict:
    torch.manual_seed(step)
    return {
        "global_step": step,
        "state_dict": {"w": torch.randn(64, 32), "b": torch.randn(32)},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.randn(64, 32)}}}],
    }


def test_a_background_write_is_the_synchronous_file_and_a_snapshot_at_the_save(
    tmp_path, monkeypatch
):
    checkpoint = a_checkpoint(3)
    before = {k: v.clone() for k, v in checkpoint["state_dict"].items()}
    AtomicCheckpointIO(background=False).save_checkpoint(checkpoint, tmp_path / "sync.ckpt")
    gate = gated_writes(monkeypatch)
    io = AtomicCheckpointIO()
    io.save_checkpoint(checkpoint, tmp_path / "background.ckpt")
    # save_checkpoint returned with the write still queued; training changes the weights now
    assert not (tmp_path / "background.ckpt").exists()
    checkpoint["state_dict"]["w"].add_(1.0)
    checkpoint["state_dict"]["b"].zero_()
    gate.set()
    io.wait()
    stored = torch.load(tmp_path / "background.ckpt", weights_only=True)
    reference = torch.load(tmp_path / "sync.ckpt", weights_only=True)
    assert stored["global_step"] == reference["global_step"] == 3
    for key, value in before.items():
        assert torch.equal(stored["state_dict"][key], value), key
        assert torch.equal(stored["state_dict"][key], reference["state_dict"][key]), key
    assert not torch.equal(stored["state_dict"]["w"], checkpoint["state_dict"]["w"])
    exp_avg = stored["optimizer_states"][0]["state"][0]["exp_avg"]
    assert torch.equal(exp_avg, reference["optimizer_states"][0]["state"][0]["exp_avg"])
    # the same bytes as torch.save straight into the file, and the usual permissions
    sync_bytes = (tmp_path / "sync.ckpt").read_bytes()
    assert (tmp_path / "background.ckpt").read_bytes() == sync_bytes
    mode = os.stat(tmp_path / "background.ckpt").st_mode & 0o777
    assert mode == os.stat(tmp_path / "sync.ckpt").st_mode & 0o777 == 0o666 & ~checkpoints._umask()
    io.teardown()
    assert not writer_threads()


def enospc(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("raised_by", ["save", "wait", "teardown", "load"])
def test_a_full_disk_in_the_writer_is_raised_once_and_keeps_the_older_file(
    tmp_path, monkeypatch, raised_by
):
    io = AtomicCheckpointIO()
    last, best = tmp_path / "last.ckpt", tmp_path / "best.ckpt"
    io.save_checkpoint(a_checkpoint(1), last)
    io.wait()
    with monkeypatch.context() as patched:
        patched.setattr(checkpoints.os, "fsync", enospc)  # the temporary file written, then this
        io.hold(last)
        io.save_checkpoint(a_checkpoint(2), best)  # held, to become a link to last.ckpt
        io.save_checkpoint(a_checkpoint(2), last)  # returns: the write fails on the writer
        io.remove_checkpoint(tmp_path / "other.ckpt")
        assert len(writer_threads()) == 1
        with pytest.raises(DiskFull) as raised:
            if raised_by == "save":
                io.save_checkpoint(a_checkpoint(3), tmp_path / "next.ckpt")
            elif raised_by == "wait":
                io.wait()
            elif raised_by == "teardown":
                io.teardown()
            else:
                io.load_checkpoint(last)
    assert f"last.ckpt could not be written to {tmp_path}" in str(raised.value)
    assert raised.value.__cause__.errno == errno.ENOSPC
    assert not (tmp_path / "next.ckpt").exists()  # a save that raises writes nothing
    # raised once: the writer goes on with what comes next
    io.wait()
    io.save_checkpoint(a_checkpoint(4), tmp_path / "after.ckpt")
    io.teardown()
    assert torch.load(tmp_path / "after.ckpt", weights_only=True)["global_step"] == 4
    # the older last.ckpt, whole; best.ckpt never linked to the write that failed; no .tmp left
    assert torch.load(last, weights_only=True)["global_step"] == 1
    assert not best.exists()
    assert not list(tmp_path.glob(".*.tmp"))
    assert not writer_threads()


def test_a_failed_write_keeps_its_error_but_not_the_serialised_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    monkeypatch.setattr(checkpoints.os, "fsync", enospc)
    io.save_checkpoint({"weights": torch.zeros(100_000)}, tmp_path / "last.ckpt")  # 400 kB
    with pytest.raises(DiskFull) as raised:
        io.wait()
    held = []  # what every frame between the writer and the raise still holds (a level deep)
    for error in (raised.value, raised.value.__cause__):
        tb = error.__traceback__
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                held += value if isinstance(value, tuple) else [value]
            tb = tb.tb_next
    assert not [v for v in held if isinstance(v, (bytes, memoryview)) and len(v) > 100_000]
    io.teardown()


def test_a_failed_write_is_logged_not_raised_while_another_error_goes_on(
    tmp_path, monkeypatch, caplog
):
    io = AtomicCheckpointIO()
    monkeypatch.setattr(checkpoints.os, "fsync", enospc)
    io.save_checkpoint(a_checkpoint(1), tmp_path / "last.ckpt")
    with caplog.at_level(logging.ERROR, logger="rnnlab"):
        with pytest.raises(RuntimeError, match="the first error"):
            try:
                raise RuntimeError("the first error")
            except RuntimeError:
                io.teardown()  # as Lightning tears down inside its except
                raise
    assert any("the disk is full: last.ckpt" in r.getMessage() for r in caplog.records)
    assert not list(tmp_path.glob("*.ckpt")) and not list(tmp_path.glob(".*.tmp"))
    assert not writer_threads()


def test_writes_links_and_removals_reach_the_disk_in_the_order_queued(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    last, best, old = tmp_path / "last.ckpt", tmp_path / "best.ckpt", tmp_path / "old.ckpt"
    io.save_checkpoint(a_checkpoint(1), old)
    io.wait()
    gate = gated_writes(monkeypatch)
    io.hold(last)
    io.save_checkpoint(a_checkpoint(5), best)  # held
    io.save_checkpoint(a_checkpoint(5), last)  # a write, then best.ckpt's link to it, queued
    io.remove_checkpoint(old)
    # the write waits at the gate; the link and the removal wait behind it
    assert not last.exists() and not best.exists() and old.exists()
    gate.set()
    io.wait()
    assert torch.load(last, weights_only=True)["global_step"] == 5
    assert os.stat(best).st_ino == os.stat(last).st_ino  # one file, two names
    assert not old.exists()
    # a removal queued right after the write of the same path: the file is gone at the end
    gate.clear()
    io.save_checkpoint(a_checkpoint(6), old)
    io.remove_checkpoint(old)
    gate.set()
    io.teardown()
    assert not old.exists()
    assert torch.load(best, weights_only=True)["global_step"] == 5
    assert not list(tmp_path.glob(".*.tmp"))
    assert not writer_threads()


class FinalState(L.Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        self.step = trainer.global_step
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def slow_writes(monkeypatch, seconds: float = 0.3) -> None:
    """Writes that take long: a run that returned before them would leave an older last.ckpt."""
    write = checkpoints.atomic_write_bytes

    def slow(data, path, mode=None):
        threading.Event().wait(seconds)
        write(data, path, mode)

    monkeypatch.setattr(checkpoints, "atomic_write_bytes", slow)


def test_a_run_returns_with_its_checkpoints_on_disk(tmp_path, monkeypatch):
    slow_writes(monkeypatch)
    final = FinalState()
    cfg = make_cfg([*RUN, "trainer.max_epochs=3", "callbacks.early_stopping=null"], tmp_path)
    train(cfg, extra_callbacks=[final])
    folder = tmp_path / "checkpoints"
    last, best = load_checkpoint(folder / "last.ckpt"), load_checkpoint(folder / "best.ckpt")
    assert final.step == last["global_step"] == 12
    assert set(last["state_dict"]) == set(final.state)
    for key, value in final.state.items():
        assert torch.equal(last["state_dict"][key], value), key
    assert best["global_step"] in (4, 8, 12)
    if best["global_step"] == 12:
        for key, value in final.state.items():
            assert torch.equal(best["state_dict"][key], value), key
    assert not list(folder.glob(".*.tmp"))
    assert not writer_threads()


@pytest.mark.parametrize("epochs", [2, 3])
def test_a_full_disk_in_the_writer_stops_the_run_with_the_older_checkpoints(
    tmp_path, monkeypatch, epochs
):
    write = checkpoints._atomic_write
    calls = []

    def fills_the_disk(path, data_writer, mode=None):
        calls.append(path.name)
        if len(calls) == 1:
            return write(path, data_writer, mode)

        def half_then_full(f):
            f.write(b"x" * 1000)
            enospc()

        return write(path, half_then_full, mode)

    monkeypatch.setattr(checkpoints, "_atomic_write", fills_the_disk)
    cfg = make_cfg(
        [*RUN, f"trainer.max_epochs={epochs}", "callbacks.early_stopping=null"], tmp_path
    )
    # the second epoch's write fails on the writer thread: the third epoch's save raises it,
    # or, with two epochs, the end of training does
    with pytest.raises(DiskFull, match="last.ckpt could not be written"):
        train(cfg)
    assert calls == ["last.ckpt", "last.ckpt"]
    folder = tmp_path / "checkpoints"
    assert load_checkpoint(folder / "last.ckpt")["global_step"] == 4
    assert load_checkpoint(folder / "best.ckpt")["global_step"] == 4
    assert not list(folder.glob(".*.tmp"))
    assert not writer_threads()


def test_foreground_writes_go_on_the_training_thread_and_a_bad_choice_is_refused(
    tmp_path, monkeypatch
):
    from rnnlab.config_checks import check_values
    from rnnlab.errors import RnnlabError

    threads: list[str] = []
    save = checkpoints.atomic_torch_save

    def recorded(obj, path):
        threads.append(threading.current_thread().name)
        save(obj, path)

    monkeypatch.setattr(checkpoints, "atomic_torch_save", recorded)
    cfg = make_cfg([*RUN, "trainer.max_epochs=2", "checkpoint_writes=foreground"], tmp_path)
    train(cfg)
    # one write an epoch end (best.ckpt linked to it), each on the thread that trains
    assert threads == [threading.main_thread().name] * 2
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 8
    cfg.checkpoint_writes = "later"
    with pytest.raises(
        RnnlabError, match="checkpoint_writes must be background or foreground, got .later."
    ):
        check_values(cfg)


def test_a_stop_after_a_failed_write_saves_its_own_checkpoint_and_says_so(tmp_path, monkeypatch):
    import signal

    from rnnlab.errors import RunStopped

    write = checkpoints.atomic_write_bytes
    calls: list[str] = []

    def first_fails(data, path, mode=None):
        calls.append(path.name)
        if len(calls) == 1:  # the first epoch's last.ckpt: no room
            raise OSError(errno.ENOSPC, "No space left on device")
        write(data, path, mode)

    monkeypatch.setattr(checkpoints, "atomic_write_bytes", first_fails)

    class Sigterm(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 5:  # one batch into the second epoch
                os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(RunStopped) as stop:
        train(make_cfg([*RUN, "trainer.max_epochs=3"], tmp_path), extra_callbacks=[Sigterm()])
    # the earlier failure is logged, not raised over the stop; the stop's own save is on disk
    last = tmp_path / "checkpoints" / "last.ckpt"
    step = load_checkpoint(last)["global_step"]
    assert 4 < step < 8  # in the second epoch, after the failed write of the first's end
    assert f"at step {step} " in str(stop.value)
    assert f"saved {last}" in str(stop.value) and "resume with" in str(stop.value)
    assert calls == ["last.ckpt", "last.ckpt"] and not writer_threads()
