"""Stateful character streams (data.stateful=true): the layout, the carried state, resume, DDP."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
import torch
from conftest import QUIET, make_cfg
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rnnlab.checkpoints import load_checkpoint
from rnnlab.config import CONF_DIR
from rnnlab.config_checks import check_values
from rnnlab.data import CharsDataModule
from rnnlab.data.chars import StreamOrder, streams
from rnnlab.errors import RnnlabError, RunStopped
from rnnlab.nets import RecurrentNet
from rnnlab.predict import generate
from rnnlab.tasks.lm import LanguageModel
from rnnlab.train import train

MODELS = [
    "rnn", "lstm", "gru", "rnn_cell", "lstm_cell", "gru_cell", "char_rnn",
    "mingru", "minlstm", "indrnn", "lru", "s4d",
]  # fmt: skip
TEXT = "".join(chr(ord("a") + (i * 7 + i // 26) % 26) for i in range(2000))


def letters(tmp_path, text: str = TEXT):
    path = tmp_path / "letters.txt"
    path.write_text(text)
    return path


def test_row_r_of_each_batch_continues_row_r_of_the_batch_before(tmp_path):
    dm = CharsDataModule(letters(tmp_path), seq_len=7, batch_size=4, stateful=True)
    dm.setup()
    batches = list(dm.train_dataloader())
    # 1800 training characters: 4 streams of (1800 - 1) // 4 = 449, 64 whole batches of 7
    assert len(batches) == 449 // 7 == 64
    assert [b["offset"] for b in batches[:3]] == [0, 7, 14]
    for before, after in zip(batches, batches[1:], strict=False):
        assert after["x"].shape == (4, 7)
        assert torch.equal(after["x"][:, 0], before["y"][:, -1])  # the next character
        assert torch.equal(before["x"][:, 1:], before["y"][:, :-1])
    for r in range(4):
        stream = torch.cat([b["x"][r] for b in batches])
        assert dm.decode(stream) == TEXT[r * 449 : r * 449 + 64 * 7]
        targets = torch.cat([b["y"][r] for b in batches])
        assert dm.decode(targets) == TEXT[r * 449 + 1 : r * 449 + 64 * 7 + 1]
    # the same order every epoch
    dm.train_dataloader().sampler.set_epoch(3)
    again = list(dm.train_dataloader())
    assert all(torch.equal(a["x"], b["x"]) for a, b in zip(batches, again, strict=True))
    val = list(dm.val_dataloader())  # validation reads streams too: 100 characters, 4 x 24
    assert len(val) == 24 // 7 and dm.decode(val[1]["x"][2]) == TEXT[1800 + 48 + 7 : 1800 + 62]


def test_ddp_processes_read_their_own_streams_with_as_many_batches_each(tmp_path):
    dm = CharsDataModule(letters(tmp_path), seq_len=5, batch_size=6, stateful=True)
    dm.setup()

    def rows(world: int, rank: int) -> list[torch.Tensor]:
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank)
        return [b["x"] for b in dm.train_dataloader()]

    single = rows(1, 0)
    shares = [rows(3, rank) for rank in range(3)]
    assert [len(s) for s in shares] == [len(single)] * 3  # the same number of batches
    for i, whole in enumerate(single):
        assert [len(s[i]) for s in shares] == [2, 2, 2]
        assert torch.equal(torch.cat([s[i] for s in shares]), whole)  # streams 0-1, 2-3, 4-5
    ids = [set(StreamOrder(dm.splits["train"], 6, 3, rank)) for rank in range(3)]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2]) and not (ids[0] & ids[2])
    assert ids[0] | ids[1] | ids[2] == set(range(len(dm.splits["train"])))
    dm.trainer = SimpleNamespace(world_size=4, global_rank=0)
    with pytest.raises(ValueError, match="data.batch_size=6 is the global batch"):
        dm.train_dataloader()


def test_carrying_the_state_batch_by_batch_equals_one_pass_over_the_whole_stream():
    torch.manual_seed(0)
    net = RecurrentNet(30, "lstm", vocab_size=30, hidden_size=16, num_layers=2,
                       output_mode="sequence")  # fmt: skip
    ids = torch.randint(2, 30, (100,))
    parts = streams(ids, num_streams=3, seq_len=8)  # 3 streams of 33, 4 batches of 8
    x = parts["x"].view(4, 3, 8)  # (batch, stream, seq)
    whole = net(x.transpose(0, 1).reshape(3, 32))  # (stream, 32, vocab), from zeros
    state, pieces = None, []
    for batch in x:
        out, state = net.carry(batch, state)
        pieces.append(out)
    assert torch.allclose(torch.cat(pieces, dim=1), whole, atol=1e-5)
    # and from zeros each batch, it is not the same
    assert not torch.allclose(net.carry(x[1])[0], whole[:, 8:16], atol=1e-3)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_carries_its_state_exactly(model):
    cfg = OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml")  # the shipped model config
    cfg.hidden_size = 8
    torch.manual_seed(1)
    net = instantiate(cfg, output_size=12, vocab_size=12, output_mode="sequence").eval()
    x = torch.randint(2, 12, (2, 12))
    whole = net(x)
    first, state = net.carry(x[:, :5])
    second, _ = net.carry(x[:, 5:], state)
    assert torch.allclose(torch.cat([first, second], dim=1), whole, atol=1e-5)


def test_gradients_stop_at_the_batch_boundary_and_the_state_resets_at_offset_zero():
    torch.manual_seed(0)
    net = RecurrentNet(8, "gru", vocab_size=8, hidden_size=6, output_mode="sequence")
    task = LanguageModel(net, num_classes=8)
    first = {"x": torch.tensor([[2, 3, 2], [3, 2, 3]]), "offset": 0}
    second = {"x": torch.tensor([[4, 5, 4], [5, 4, 5]]), "offset": 3}

    def forward(batch):
        task.reading = ("train", batch["offset"])
        try:
            return task(batch["x"])
        finally:
            task.reading = None

    forward(first)
    state, end = task.carried["train"]
    assert end == 3 and state.grad_fn is None and not state.requires_grad
    out = forward(second)
    assert torch.allclose(out, net.carry(second["x"], state)[0])
    assert not torch.allclose(out, net.carry(second["x"])[0])  # the carried state counts
    out.sum().backward()
    grad = net.encoder.embedding.weight.grad
    assert grad[2].abs().sum() == 0 and grad[3].abs().sum() == 0  # only in the batch before
    assert grad[4].abs().sum() > 0 and grad[5].abs().sum() > 0
    # offset 0 (the next epoch) and an offset the state does not end at start from zeros
    for batch in ({**first}, {**second, "offset": 9}):
        assert torch.equal(forward(batch), net.carry(batch["x"])[0])
    # each stage keeps its own state
    task.reading = ("val", 0)
    task(first["x"])
    assert task.carried["val"][1] == 3 and task.carried["train"][1] == 9 + 3


def test_stateful_with_a_bidirectional_net_is_refused_before_anything_is_built(tmp_path):
    cfg = make_cfg(["experiment=shakespeare", "data.stateful=true", "model.bidirectional=true"],
                   tmp_path)  # fmt: skip
    with pytest.raises(RnnlabError, match="data.stateful=true carries the state forward"):
        check_values(cfg)
    cfg.model.bidirectional, cfg.data.stateful = False, "yes"
    with pytest.raises(RnnlabError, match="data.stateful must be"):
        check_values(cfg)


# ---------------------------------------------------------------- a run, stopped and resumed

# 1600 training characters in 8 streams of 199: 9 batches of 20 an epoch, 2 epochs; dropout,
# so the random state matters too
RUN = [
    "experiment=shakespeare",
    "data.stateful=true",
    "data.seq_len=20",
    "data.batch_size=8",
    "data.val_fraction=0.1",
    "data.test_fraction=0.1",
    "model.hidden_size=24",
    "model.embedding_dim=8",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "trainer.accelerator=cpu",
    "callbacks.early_stopping=null",
    *QUIET,
]


class SendSignal:
    """Sends SIGTERM to this process after training step ``step``."""

    def __init__(self, step: int) -> None:
        import lightning as L

        class Send(L.Callback):
            def on_train_batch_end(self, trainer, *args) -> None:
                if trainer.global_step == step:
                    import os

                    os.kill(os.getpid(), signal.SIGTERM)

        self.callback = Send()


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("stateful")
    path = letters(root)
    metrics = train(make_cfg([*RUN, f"data.path={path}"], root / "run"))
    return path, root / "run", metrics


def test_a_run_stopped_mid_epoch_resumes_with_its_carried_state_exactly(reference, tmp_path):
    path, run, metrics = reference
    args = [*RUN, f"data.path={path}"]
    with pytest.raises(RunStopped):
        train(make_cfg(args, tmp_path / "a"), extra_callbacks=[SendSignal(12).callback])
    ckpt = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 13  # mid-epoch 1, four batches in
    (state, end), = ckpt["rnnlab_carried"]  # fmt: skip
    assert end == 4 * 20 and state[0].shape == (2, 8, 24)  # (h, c): layers, streams, hidden
    resumed = train(make_cfg([*args, "resume=true"], tmp_path / "a"))
    assert {k: v for k, v in resumed.items() if k.startswith(("val/", "test/"))} == {
        k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))
    }
    difference = max(
        (a - b).abs().max().item()
        for a, b in zip(
            weights(run / "checkpoints" / "last.ckpt").values(),
            weights(tmp_path / "a" / "checkpoints" / "last.ckpt").values(),
            strict=True,
        )
    )
    assert difference == 0.0


@pytest.mark.slow  # a second stop and resume
def test_a_checkpoint_without_the_carried_state_would_not_resume_exactly(reference, tmp_path):
    path, run, _ = reference
    args = [*RUN, f"data.path={path}"]
    with pytest.raises(RunStopped):
        train(make_cfg(args, tmp_path / "b"), extra_callbacks=[SendSignal(12).callback])
    # without the carried state the resumed epoch starts its streams from zeros: not the same
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    stripped = torch.load(last, weights_only=False)
    del stripped["rnnlab_carried"]
    torch.save(stripped, last)
    train(make_cfg([*args, "resume=true"], tmp_path / "b"))
    assert any(
        not torch.equal(a, b)
        for a, b in zip(
            weights(run / "checkpoints" / "last.ckpt").values(),
            weights(last).values(),
            strict=True,
        )
    )


def test_a_stateful_checkpoint_generates_text(reference):
    _, run, _ = reference
    ckpt = run / "checkpoints" / "best.ckpt"
    text = generate(ckpt, prompt="abc", length=40, temperature=0.8, seed=1)
    assert len(text) == 40 and set(text) <= set(TEXT)
    assert text == generate(ckpt, prompt="abc", length=40, temperature=0.8, seed=1)
    greedy = generate(ckpt, prompt="abc", length=20, temperature=0.0)
    assert len(greedy) == 20


@pytest.mark.slow  # one short training run per model
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_on_streams(model, tmp_path):
    cfg = make_cfg(
        [f"model={model}", "data=chars", f"data.path={letters(tmp_path)}", "data.stateful=true",
         "data.seq_len=16", "data.batch_size=4", "debug=fast", *QUIET],
        tmp_path / "run",
    )  # fmt: skip
    import math

    assert math.isfinite(train(cfg)["test/loss"])


@pytest.mark.slow  # two processes over gloo, then one
def test_ddp_streams_run_like_one_process_and_save_each_process_state(tmp_path):
    import json

    from conftest import run_cli

    args = [*RUN, f"data.path={letters(tmp_path)}", "model.num_layers=1", "model.dropout=0.0"]
    args = [a for a in args if not a.startswith(("trainer.accelerator", "trainer.determ"))]
    result = run_cli(["trainer=ddp_cpu", *args, f"hydra.run.dir={tmp_path / 'ddp'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["metrics"]
    single = train(make_cfg(["trainer=cpu", *args], tmp_path / "single"))
    for key in ("val/loss", "test/loss", "test/bpc"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-5), key
    carried = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt")["rnnlab_carried"]
    assert len(carried) == 2 and carried[0][0][0].shape == (1, 4, 24)  # 4 of the 8 streams each
    assert not torch.equal(carried[0][0][0], carried[1][0][0])


@pytest.mark.slow  # three DDP runs
def test_a_ddp_run_stopped_mid_epoch_resumes_each_process_streams_exactly(tmp_path):
    import json

    from conftest import run_cli
    from test_distributed import assert_same_run, reference_and_stopped

    # 20000 characters: about 100 batches an epoch in each process, so a SIGTERM sent when the
    # first epoch's last.ckpt appears lands part-way through the second
    args = [*RUN, f"data.path={letters(tmp_path, TEXT * 10)}", "model.hidden_size=64"]
    args = [a for a in args if not a.startswith(("trainer.accelerator", "trainer.determ"))]
    args = [*args, "trainer=ddp_cpu", "trainer.max_epochs=3"]
    reference, run = reference_and_stopped(args, tmp_path)
    a = json.loads((reference / "metrics.json").read_text())
    steps_per_epoch = a["global_step"] // 3
    stopped = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert 0 < stopped["global_step"] % steps_per_epoch  # part-way through an epoch
    (r0, end0), (r1, end1) = stopped["rnnlab_carried"]  # each process's state and position
    assert end0 == end1 > 0 and not torch.equal(r0[0], r1[0])
    result = run_cli([*args, f"hydra.run.dir={run}", "resume=true"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(reference, run)
