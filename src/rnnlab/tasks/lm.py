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


class LanguageModel(SequenceTask):
    """Predicts the next token at every step.

    Logs ``{stage}/loss`` (nats per character), ``{stage}/bpc`` (bits per character, the loss
    over ln 2), ``{stage}/ppl`` (perplexity, exp of the epoch's mean loss) and ``val/loss_best``.
    """

    monitor = "val/loss"
    mode = "min"

    def __init__(self, net: nn.Module, num_classes: int, **kwargs) -> None:
        super().__init__(net, **kwargs)
        self.num_classes = num_classes
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_bpc", MeanMetric())
            setattr(self, f"{stage}_ppl", Perplexity())

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

    A unidirectional fused recurrent net (``encoder``, ``rnn``, ``head``) carries its state from
    step to step, as does a net whose ``rnn`` says it can (``carries_state``: the scan models);
    any other net re-reads the whole text at every step.
    """
    if not prompt:
        raise ValueError("generation needs a prompt of at least one known character")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    banned = list(banned)
    out: list[int] = []
    rnn = getattr(net, "rnn", None)
    stateful = (
        (isinstance(rnn, nn.RNNBase) or getattr(rnn, "carries_state", False))
        and not rnn.bidirectional
        and rnn.batch_first
        and hasattr(net, "encoder")
        and hasattr(net, "head")
    )
    try:
        if stateful:
            ids = torch.tensor([prompt], device=device)  # (1, prompt)
            hidden, state = rnn(net.encoder(ids))
            for _ in range(length):
                out.append(_next_id(net.head(hidden[0, -1]).cpu(), temperature, banned, g))
                step = torch.tensor([[out[-1]]], device=device)  # (1, 1)
                hidden, state = rnn(net.encoder(step), state)
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
