"""Character language modelling: chunks and targets, the split by position, learning, errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import QUIET

from rnnlab.data import CharsDataModule
from rnnlab.errors import RnnlabError
from rnnlab.predict import generate
from rnnlab.review import event_dir
from rnnlab.train import train

REPEATED = "the cat sat on the mat. " * 120  # 2880 characters, period 24


def test_chunks_are_contiguous_with_next_character_targets(tmp_path):
    path = tmp_path / "t.txt"
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    path.write_text(text)
    dm = CharsDataModule(path, seq_len=10, val_fraction=0.1, test_fraction=0.1)
    dm.setup()
    t = dm.splits["train"].tensors
    assert t["x"].shape == (79, 10)  # 800 training characters -> (800 - 1) // 10 chunks
    assert torch.equal(t["x"].flatten()[1:], t["y"].flatten()[:-1])
    assert dm.decode(t["x"][0]) == text[:10] and dm.decode(t["y"][0]) == text[1:11]
    v = dm.splits["val"].tensors
    assert dm.decode(v["x"][0]) == text[800:810]  # validation follows training by position
    assert dm.decode(dm.splits["test"].tensors["x"][0]) == text[900:910]
    assert dm.dims.task == "lm" and dm.dims.vocab_size == 26 + 2 == dm.dims.output_size


def test_unigram_baseline_is_the_entropy_of_the_training_characters(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("ab" * 500)
    dm = CharsDataModule(path, seq_len=10)
    dm.setup()
    assert dm.baselines["loss"] == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize(
    ("text", "kwargs", "needle"),
    [
        ("short", {"seq_len": 10}, "has 5 characters, fewer than one chunk of data.seq_len=10"),
        ("x" * 100, {"seq_len": 10}, "the val part of"),
    ],
)
def test_text_shorter_than_a_chunk_is_a_clear_error(tmp_path, text, kwargs, needle):
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(RnnlabError) as info:
        CharsDataModule(path, **kwargs).setup()
    assert needle in str(info.value)


def test_missing_or_undecodable_file_is_named(tmp_path):
    with pytest.raises(RnnlabError, match="text file .*nowhere.txt does not exist"):
        CharsDataModule(tmp_path / "nowhere.txt").setup()
    (tmp_path / "bad.txt").write_bytes(b"abc\xff" * 100)
    with pytest.raises(RnnlabError, match="bad.txt is not UTF-8 text"):
        CharsDataModule(tmp_path / "bad.txt").setup()


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    from conftest import make_cfg

    root = tmp_path_factory.mktemp("lm")
    path = root / "cat.txt"
    path.write_text(REPEATED)
    cfg = make_cfg(
        [
            "experiment=shakespeare",
            f"data.path={path}",
            "data.seq_len=20",
            "data.batch_size=16",
            "data.val_fraction=0.1",
            "data.test_fraction=0.1",
            "model.hidden_size=48",
            "model.num_layers=1",
            "model.embedding_dim=16",
            "optimizer.lr=0.01",
            "trainer.max_epochs=12",
            "trainer.accelerator=cpu",
            "callbacks.early_stopping=null",
            *QUIET,
        ],
        root / "run",
    )
    return root, train(cfg)


def test_lm_beats_the_unigram_baseline_and_logs_bits_and_perplexity(lm_run):
    root, metrics = lm_run
    dm = CharsDataModule(root / "cat.txt", seq_len=20, val_fraction=0.1, test_fraction=0.1)
    dm.setup()
    unigram = dm.baselines["loss"]  # about 2.3 nats for this text
    assert metrics["test/loss"] < 0.25 * unigram
    assert metrics["test/bpc"] == pytest.approx(metrics["test/loss"] / math.log(2), abs=1e-5)
    assert metrics["test/ppl"] == pytest.approx(math.exp(metrics["test/loss"]), rel=1e-5)
    assert metrics["val/loss_best"] <= metrics["val/loss"] + 1e-6

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(event_dir(root / "run")), size_guidance={"tensors": 0}).Reload()
    samples = events.Tensors("val/sample/text_summary")
    assert len(samples) == 12  # one per validation
    assert "temperature 0.8" in samples[-1].tensor_proto.string_val[0].decode()


def test_generation_from_the_checkpoint_continues_the_pattern(lm_run):
    root, _ = lm_run
    ckpt = root / "run" / "checkpoints" / "best.ckpt"
    greedy = generate(ckpt, prompt="the cat ", length=40, temperature=0.0)
    assert greedy == REPEATED[8:48]
    sampled = generate(ckpt, prompt="the", length=50, temperature=1.0, seed=3)
    assert len(sampled) == 50
    assert sampled == generate(ckpt, prompt="the", length=50, temperature=1.0, seed=3)
    with pytest.raises(RnnlabError, match="non-empty prompt"):
        generate(ckpt, prompt="", length=5)


def test_shakespeare_experiment_trains_an_lstm_on_any_path(cfg_factory, tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(REPEATED)
    cfg = cfg_factory("experiment=shakespeare", f"data.path={path}", "debug=fast", *QUIET)
    assert cfg.model.cell == "lstm" and cfg.data._target_ == "rnnlab.data.CharsDataModule"
    metrics = train(cfg)
    assert math.isfinite(metrics["test/loss"])


def test_default_path_is_the_shared_tiny_shakespeare(cfg_factory, shared_data):
    cfg = cfg_factory("experiment=shakespeare")
    assert cfg.data.path.endswith("shared/data/tinyshakespeare/input.txt")
    dm = CharsDataModule(shared_data / "tinyshakespeare" / "input.txt", seq_len=128)
    dm.setup()
    assert dm.dims.vocab_size == 65 + 2
