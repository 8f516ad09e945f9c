"""Pieces shared by every net: input encoding, last-valid-step gathering, initialization, checks."""

from __future__ import annotations

import torch
from torch import nn


def check_dims(**values) -> None:
    """Raise ValueError naming the first impossible net setting."""
    for key in (
        "hidden_size",
        "num_layers",
        "output_size",
        "input_size",
        "vocab_size",
        "embedding_dim",
    ):
        if key in values and values[key] is not None:
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"model.{key} must be a positive integer, got {v!r}")
    if "dropout" in values:
        d = values["dropout"]
        if not isinstance(d, (int, float)) or not 0.0 <= d < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {d!r}")
    if "output_mode" in values and values["output_mode"] not in ("last", "sequence"):
        raise ValueError(f"output_mode must be 'last' or 'sequence', got {values['output_mode']!r}")


class InputEncoder(nn.Module):
    """Feature vectors pass through unchanged; token ids (batch, seq) go through an embedding."""

    def __init__(self, input_size: int | None, vocab_size: int | None, embedding_dim: int) -> None:
        super().__init__()
        if (input_size is None) == (vocab_size is None):
            raise ValueError(
                "a net needs exactly one of input_size (features) or vocab_size (token ids)"
            )
        check_dims(input_size=input_size, vocab_size=vocab_size, embedding_dim=embedding_dim)
        self.embedding = nn.Embedding(vocab_size, embedding_dim) if vocab_size else None
        self.output_size = embedding_dim if vocab_size else input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return self.embedding(x)  # (batch, seq) -> (batch, seq, embedding_dim)
        return x


def last_valid_step(out: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """(batch, seq, hidden) -> (batch, hidden): the output at step ``lengths - 1`` of each sequence."""
    if lengths is None:
        return out[:, -1]
    index = (lengths.to(out.device) - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
    return out.gather(1, index).squeeze(1)


def init_recurrent_(module: nn.Module, init: str, init_std: float) -> None:
    """Re-initialize recurrent weights: 'default' keeps torch's, 'normal' draws N(0, init_std)
    for every recurrent parameter (seed 001's scheme), 'orthogonal' uses orthogonal hidden weights."""
    if init == "default":
        return
    if init not in ("normal", "orthogonal"):
        raise ValueError(f"model.init must be default, normal or orthogonal, got {init!r}")
    if init == "normal" and not init_std > 0:
        raise ValueError(f"model.init_std must be positive, got {init_std!r}")
    for name, p in module.named_parameters():
        if name.startswith(("head", "encoder")):
            continue
        if init == "normal":
            nn.init.normal_(p, mean=0.0, std=init_std)
        elif "weight_hh" in name:
            nn.init.orthogonal_(p)
        elif "bias" in name:
            nn.init.zeros_(p)
