"""Next-character language modelling: cross-entropy at every step, in nats, bits and perplexity."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, Metric

from rnnlab.data.vocab import PAD_ID, UNK_ID, Vocabulary
from rnnlab.errors import RnnlabError
from rnnlab.tasks.base import SequenceTask

LN2 = math.log(2.0)


class Perplexity(MeanMetric):
    """exp of the token-weighted mean loss: perplexity over an epoch."""

    def compute(self) -> torch.Tensor:
        return torch.exp(super().compute())


def _detach(state):
    """A net's state (a tensor, or a tuple of them for the LSTM) cut from the graph."""
    if isinstance(state, tuple):
        return tuple(t.detach() for t in state)
    return state.detach()


def _to(state, device):
    """A net's state on ``device``."""
    if isinstance(state, tuple):
        return tuple(t.to(device) for t in state)
    return state.to(device)


class LanguageModel(SequenceTask):
    """Predicts the next token at every step.

    Logs ``{stage}/loss`` (nats per character), ``{stage}/bpc`` (bits per character, the loss
    over ln 2), ``{stage}/ppl`` (perplexity, exp of the epoch's mean loss) and ``val/loss_best``.

    A batch of streams (one with an ``offset``, from ``data.stateful=true``) is read on from the
    state the previous batch of the same stage left (``net.carry``), cut from the graph so that
    gradients flow back ``seq_len`` steps; a batch at offset 0 (a new epoch) or at an offset the
    carried state does not end at starts from zeros. The training state travels in checkpoints
    (every process's, under DDP), so a run resumed mid-epoch goes on exactly.
    """

    monitor = "val/loss"
    mode = "min"

    def __init__(self, net: nn.Module, num_classes: int, **kwargs) -> None:
        super().__init__(net, **kwargs)
        self.num_classes = num_classes
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_bpc", MeanMetric())
            setattr(self, f"{stage}_ppl", Perplexity())
        self.carried: dict[str, tuple[object, int]] = {}  # stage -> (state, offset it ends at)
        self.reading: tuple[str, int] | None = None  # (stage, offset) of a batch of streams

    def step(self, stage: str, batch: dict) -> torch.Tensor | None:
        self.reading = (stage, batch["offset"]) if "offset" in batch else None
        try:
            return super().step(stage, batch)
        finally:
            self.reading = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.reading is None:
            return self.net(x, lengths)
        if not getattr(self.net, "carries_state", False):
            raise RnnlabError(
                f"data.stateful=true needs a net that carries its state on; "
                f"{type(self.net).__name__} does not (a bidirectional net reads ahead)"
            )
        stage, offset = self.reading
        state, end = self.carried.get(stage, (None, 0))
        if offset == 0 or offset != end:  # a new epoch, or not where the state stopped
            state = None
        elif state is not None:
            state = _to(state, x.device)
        output, state = self.net.carry(x, state)  # (batch, seq, vocab)
        self.carried[stage] = (_detach(state), offset + x.shape[1])
        return output

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if "train" not in self.carried:
            return
        state, end = self.carried["train"]
        mine = (_to(state, "cpu"), end)
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1 and torch.distributed.is_initialized():
            ranks: list = [None] * trainer.world_size  # every process saves together
            torch.distributed.all_gather_object(ranks, mine)
        else:
            ranks = [mine]
        checkpoint["rnnlab_carried"] = ranks

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.carried = {}
        ranks = checkpoint.get("rnnlab_carried") or []
        trainer = self._trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        if len(ranks) == world:
            self.carried["train"] = ranks[rank]

    def loss_and_update(self, stage: str, output: torch.Tensor, batch: dict) -> torch.Tensor:
        y = batch["y"]  # (batch, seq)
        if output.dim() != 3:
            raise ValueError(
                "a language model needs a net with a prediction at every step (output_mode "
                f"'sequence'); got output of shape {tuple(output.shape)}"
            )
        loss = F.cross_entropy(output.reshape(-1, output.shape[-1]), y.reshape(-1))
        getattr(self, f"{stage}_bpc").update(loss.detach() / LN2, weight=y.numel())
        getattr(self, f"{stage}_ppl").update(loss.detach(), weight=y.numel())
        return loss

    def stage_metrics(self, stage: str) -> dict[str, Metric]:
        return {"bpc": getattr(self, f"{stage}_bpc"), "ppl": getattr(self, f"{stage}_ppl")}


def _next_id(logits: torch.Tensor, temperature: float, banned: list[int], g) -> int:
    """Sample one id from (vocab,) logits; temperature 0 picks the most likely one."""
    logits = logits.float().clone()
    logits[banned] = -math.inf
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=g))


@torch.no_grad()
def sample_ids(
    net: nn.Module,
    prompt: list[int],
    length: int,
    temperature: float = 1.0,
    banned: list[int] = (),
    seed: int | None = None,
) -> list[int]:
    """Continue ``prompt`` (token ids) by ``length`` sampled ids; returns only the new ids.

    A net that says it can (``carries_state``: every unidirectional rnnlab net) carries its
    state from step to step with ``net.carry``, the call that reads streams in training; any
    other net re-reads the whole text at every step.
    """
    if not prompt:
        raise ValueError("generation needs a prompt of at least one known character")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    banned = list(banned)
    out: list[int] = []
    try:
        if getattr(net, "carries_state", False):
            ids = torch.tensor([prompt], device=device)  # (1, prompt)
            logits, state = net.carry(ids)  # (1, prompt, vocab)
            for _ in range(length):
                out.append(_next_id(logits[0, -1].cpu(), temperature, banned, g))
                step = torch.tensor([[out[-1]]], device=device)  # (1, 1)
                logits, state = net.carry(step, state)
        else:
            ids = list(prompt)
            for _ in range(length):
                logits = net(torch.tensor([ids], device=device))  # (1, seq, vocab)
                out.append(_next_id(logits[0, -1].cpu(), temperature, banned, g))
                ids.append(out[-1])
    finally:
        net.train(was_training)
    return out


def generate_text(
    net: torch.nn.Module,
    vocab: Vocabulary,
    prompt: str,
    length: int,
    temperature: float = 0.8,
    seed: int | None = 0,
) -> str:
    """``length`` characters sampled from a character language model after ``prompt``."""
    if not prompt:
        raise RnnlabError("generation needs a non-empty prompt")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise RnnlabError(f"length must be a non-negative integer, got {length!r}")
    if not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        raise RnnlabError(
            f"temperature must be a non-negative number (0 picks the likeliest), got {temperature}"
        )
    ids = sample_ids(net, vocab.encode(prompt), length, temperature, [PAD_ID, UNK_ID], seed)
    return vocab.decode(ids)
