"""Pieces shared by every net: input encoding, last-valid-step gathering, initialization, checks."""

from __future__ import annotations

import math

import torch
from torch import nn

from rnnlab.config_checks import integer, require


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
            require(f"model.{key}", values[key], integer(1))
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


INITS = ("default", "normal", "orthogonal", "chrono", "identity")
GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def init_recurrent_(
    module: nn.Module,
    init: str,
    init_std: float,
    cell: str | None = None,
    chrono_tmax: float | None = None,
    forget_bias: float | None = None,
) -> None:
    """Re-initialize recurrent weights.

    - ``default`` keeps torch's; ``normal`` draws N(0, init_std) for every recurrent parameter,
      weights and biases (the tutorial's two-layer net); ``orthogonal`` uses orthogonal hidden
      weights and zero biases.
    - ``identity`` (IRNN, Le et al. 2015; cell ``rnn``): hidden weights the identity, biases
      zero, input weights N(0, init_std).
    - ``chrono`` (Tallec & Ollivier 2018; cells ``lstm``, ``gru``): the gate that keeps the state
      (LSTM forget ``f``, GRU ``z``) gets bias ``log(U(1, chrono_tmax - 1))``, the LSTM input
      gate its negative; the other biases keep torch's draws.
    - ``forget_bias`` (any init; cells ``lstm``, ``gru``): that keeping gate's bias, in total,
      is this value (set after ``init``).

    Biases come in pairs (``bias_ih``, ``bias_hh``): a gate's bias is their sum, so the value
    goes to ``bias_ih`` and the ``bias_hh`` slice is zeroed.
    """
    if init not in INITS:
        raise ValueError(f"model.init must be one of {', '.join(INITS)}, got {init!r}")
    if init in ("normal", "identity") and not init_std > 0:
        raise ValueError(f"model.init_std must be positive, got {init_std!r}")
    if init == "identity" and cell not in (None, "rnn"):
        raise ValueError(f"model.init=identity (IRNN) needs cell 'rnn', not {cell!r}")
    if (init == "chrono" or forget_bias is not None) and cell not in GATES:
        what = "model.init=chrono" if init == "chrono" else "model.forget_bias"
        raise ValueError(f"{what} sets gate biases: it needs cell lstm or gru, not {cell!r}")
    if init == "chrono":
        if chrono_tmax is None:
            raise ValueError(
                "model.init=chrono needs model.chrono_tmax, the longest dependency in steps "
                "(for example the data's T)"
            )
        if (
            isinstance(chrono_tmax, bool)
            or not isinstance(chrono_tmax, (int, float))
            or not chrono_tmax >= 2
        ):
            raise ValueError(
                f"model.chrono_tmax must be a number of steps of at least 2, got {chrono_tmax!r}"
            )
    if forget_bias is not None and (
        isinstance(forget_bias, bool)
        or not isinstance(forget_bias, (int, float))
        or not math.isfinite(forget_bias)
    ):
        raise ValueError(f"model.forget_bias must be a finite number or null, got {forget_bias!r}")
    recurrent = [
        (name, p)
        for name, p in module.named_parameters()
        if not name.startswith(("head", "encoder"))
    ]
    with torch.no_grad():
        for name, p in recurrent:
            if init == "normal":
                nn.init.normal_(p, mean=0.0, std=init_std)
            elif init == "orthogonal":
                if "weight_hh" in name:
                    nn.init.orthogonal_(p)
                elif "bias" in name:
                    nn.init.zeros_(p)
            elif init == "identity":
                if "weight_hh" in name:
                    p.copy_(torch.eye(*p.shape))
                elif "weight_ih" in name:
                    nn.init.normal_(p, mean=0.0, std=init_std)
                elif "bias" in name:
                    nn.init.zeros_(p)
            elif init == "chrono" and "bias" in name:
                hidden = p.shape[0] // len(GATES[cell])
                keep = _gate(p, cell, "f" if cell == "lstm" else "z", hidden)
                if "bias_hh" in name:
                    keep.zero_()
                    if cell == "lstm":
                        _gate(p, cell, "i", hidden).zero_()
                    continue
                # log U(1, T_max - 1): the state's characteristic forgetting time spans 1..T_max
                keep.copy_(torch.log(torch.empty(hidden).uniform_(1, chrono_tmax - 1)))
                if cell == "lstm":
                    _gate(p, cell, "i", hidden).copy_(-keep)
        if forget_bias is not None:
            for name, p in recurrent:
                if "bias" in name:
                    hidden = p.shape[0] // len(GATES[cell])
                    keep = _gate(p, cell, "f" if cell == "lstm" else "z", hidden)
                    keep.fill_(forget_bias if "bias_ih" in name else 0.0)


def _gate(p: torch.Tensor, cell: str, gate: str, hidden: int) -> torch.Tensor:
    """The slice of a stacked gate bias (torch's order: LSTM ``i f g o``, GRU ``r z n``)."""
    k = GATES[cell].index(gate)
    return p[k * hidden : (k + 1) * hidden]
