"""best.ckpt and last.ckpt of the same epoch end are written once: one file, two names."""

from __future__ import annotations

import os

import torch
from conftest import QUIET, make_cfg

from rnnlab import checkpoints
from rnnlab.checkpoints import AtomicCheckpointIO, load_checkpoint
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
    written: list[str] = []
    save = checkpoints.atomic_torch_save

    def counted(obj, path):
        written.append(path.name)
        save(obj, path)

    monkeypatch.setattr(checkpoints, "atomic_torch_save", counted)
    return written


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


def test_held_checkpoints_are_linked_written_or_dropped_as_the_state_says(tmp_path):
    io = AtomicCheckpointIO()
    last, best = tmp_path / "last.ckpt", tmp_path / "best.ckpt"
    io.hold(last)
    io.save_checkpoint({"global_step": 5, "w": torch.ones(3)}, best)
    assert not best.exists()  # held
    io.save_checkpoint({"global_step": 5, "w": torch.full((3,), 2.0)}, last)
    assert os.stat(best).st_ino == os.stat(last).st_ino
    # another step's last.ckpt: the held checkpoint is written with its own state
    io.hold(last)
    io.save_checkpoint({"global_step": 7, "w": torch.zeros(3)}, best)
    io.save_checkpoint({"global_step": 8, "w": torch.ones(3)}, last)
    assert torch.load(best, weights_only=True)["global_step"] == 7
    assert torch.load(last, weights_only=True)["global_step"] == 8
    # released (the epoch ended without last.ckpt): written; discarded: not
    io.hold(last)
    io.save_checkpoint({"global_step": 9}, best)
    io.release()
    assert torch.load(best, weights_only=True)["global_step"] == 9
    io.hold(last)
    io.save_checkpoint({"global_step": 10}, best)
    io.discard()
    io.release()
    assert torch.load(best, weights_only=True)["global_step"] == 9
    # not holding: every save is a write of its own
    io.save_checkpoint({"global_step": 11}, best)
    assert torch.load(best, weights_only=True)["global_step"] == 11
