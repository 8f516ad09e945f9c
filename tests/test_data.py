"""Generated tasks: determinism, the rules they state, dimensions and batching."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.data import (
    AddingDataModule,
    CopyDataModule,
    CountingDataModule,
    ParityDataModule,
    PatternDataModule,
    SineDataModule,
    TensorBatches,
)

SMALL = {"n_train": 256, "n_val": 64, "n_test": 64, "batch_size": 32}


def split(dm, name="train"):
    dm.setup()
    return dm.splits[name].tensors


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (AddingDataModule(seed=s, **SMALL) for s in (1, 1, 2))
    assert torch.equal(split(a)["x"], split(b)["x"])
    assert not torch.equal(split(a)["x"], split(c)["x"])


def test_adding_targets_sum_the_two_marked_values_and_baseline_is_one_sixth():
    dm = AddingDataModule(T=30, n_train=20000, n_val=8, n_test=8, batch_size=8)
    t = split(dm)
    assert t["x"].shape == (20000, 30, 2)
    assert torch.equal(t["x"][..., 1].sum(1), torch.full((20000,), 2.0))
    assert torch.allclose((t["x"][..., 0] * t["x"][..., 1]).sum(1, keepdim=True), t["y"])
    # always predicting 1 scores about 1/6
    assert abs(((t["y"] - 1) ** 2).mean().item() - 1 / 6) < 0.01


def test_pattern_motif_labels_are_exact_and_balanced():
    dm = PatternDataModule(seq_len=10, num_symbols=4, motif=[3, 2, 1], one_hot=False, **SMALL)
    t = split(dm)
    for tokens, label in zip(t["x"].tolist(), t["y"].tolist(), strict=True):
        text = "".join(map(str, tokens))
        assert label == int("321" in text)
    assert 0.4 < t["y"].float().mean().item() < 0.75
    assert dm.dims.vocab_size == 5 and dm.dims.output_size == 2


def test_pattern_one_hot_variable_lengths_pad_with_zero_vectors():
    dm = PatternDataModule(seq_len=8, min_len=3, rule="first_last", **SMALL)
    t = split(dm)
    assert t["x"].shape == (256, 8, 4)
    steps = torch.arange(8)[None, :]
    padded = steps >= t["lengths"][:, None]
    assert torch.equal(t["x"].sum(-1) == 0, padded)
    first = t["x"][:, 0].argmax(-1)
    last = t["x"][torch.arange(256), t["lengths"] - 1].argmax(-1)
    assert torch.equal((first == last).long(), t["y"])


def test_pattern_majority_has_one_class_per_symbol():
    dm = PatternDataModule(rule="majority", num_symbols=5, one_hot=False, **SMALL)
    t = split(dm)
    counts = torch.stack([(t["x"] == s).sum(1) for s in range(1, 6)], 1)
    assert torch.equal(counts.argmax(1), t["y"])
    assert dm.dims.output_size == 5


def test_parity_label_is_the_parity_of_ones():
    dm = ParityDataModule(seq_len=9, one_hot=False, **SMALL)
    t = split(dm)
    assert torch.equal(((t["x"] == 2).sum(1) % 2), t["y"])


def test_copy_task_layout_and_baseline():
    dm = CopyDataModule(T=5, copy_len=3, num_symbols=8, one_hot=False, **SMALL)
    t = split(dm)
    x, y = t["x"], t["y"]
    assert x.shape == (256, 11) and y.shape == (256, 11)
    assert torch.equal(y[:, -3:], x[:, :3])
    assert (x[:, 3 + 5 - 1] == 9).all()  # the delimiter
    assert (y[:, :-3] == 0).all()
    assert dm.baselines["loss"] == pytest.approx(3 * math.log(8) / 11)
    assert dm.dims.output_size == 9 and dm.dims.target == "sequence"


def test_counting_reproduces_the_seed_example_and_targets_are_next_values():
    dm = CountingDataModule(seq_len=3, start_range=[1, 1], step_range=[1, 1], scale=1.0, **SMALL)
    t = split(dm)
    assert t["x"][0, :, 0].tolist() == [1.0, 2.0, 3.0]
    assert t["y"][0, :, 0].tolist() == [2.0, 3.0, 4.0]


def test_sine_targets_are_the_next_clean_values():
    dm = SineDataModule(seq_len=20, noise=0.0, **SMALL)
    t = split(dm)
    assert torch.allclose(t["x"][:, 1:], t["y"][:, :-1])


def test_tensor_batches_slice_whole_batches_and_trim_padding():
    ds = TensorBatches(
        x=torch.arange(20).view(4, 5), y=torch.arange(4), lengths=torch.tensor([2, 3, 1, 5])
    )
    batch = ds.__getitems__([0, 2])
    assert batch["x"].tolist() == [[0, 1], [10, 11]]  # padding past the longest (2) is trimmed
    assert batch["y"].tolist() == [0, 2]


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (AddingDataModule, {"T": -3}, "data.T must be a positive integer, got -3"),
        (PatternDataModule, {"rule": "nope"}, "data.rule must be one of"),
        (PatternDataModule, {"motif": [9]}, "data.motif must be symbols in 1..4"),
        (AddingDataModule, {"batch_size": 0}, "data.batch_size must be a positive integer, got 0"),
        (SineDataModule, {"noise": -1.0}, "data.noise must be non-negative"),
    ],
)
def test_impossible_data_settings_name_the_key(cls, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        cls(**kwargs)
