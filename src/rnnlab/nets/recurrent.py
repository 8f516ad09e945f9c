"""Fused recurrent nets (nn.RNN, nn.LSTM, nn.GRU) with a sequence-to-one or sequence-to-sequence head."""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.nets.common import (
    InputEncoder,
    check_dims,
    init_recurrent_,
    last_valid_step,
)

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentNet(nn.Module):
    """An encoder (features or token embedding), a fused recurrent layer stack and a linear head.

    ``output_mode="last"`` reads the last *valid* step of each sequence (per ``lengths``),
    ``output_mode="sequence"`` reads every step.
    """

    def __init__(
        self,
        output_size: int,
        cell: str = "lstm",
        input_size: int | None = None,
        vocab_size: int | None = None,
        embedding_dim: int = 32,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        nonlinearity: str = "tanh",
        output_mode: str = "last",
        init: str = "default",
        init_std: float = 0.001,
        pack: str | bool = "auto",
        chrono_tmax: float | None = None,
        forget_bias: float | None = None,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.cell must be one of {sorted(CELLS)}, got {cell!r}")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"model.nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        if nonlinearity != "tanh" and cell != "rnn":
            raise ValueError(
                f"model.nonlinearity={nonlinearity!r} only applies to cell 'rnn', not {cell!r}"
            )
        check_dims(
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout,
            output_size=output_size,
            output_mode=output_mode,
        )
        if pack not in ("auto", True, False):
            raise ValueError(f"model.pack must be auto, true or false, got {pack!r}")
        self.cell = cell
        # Packing is exact for padded batches but slow on CPU; a unidirectional net reads the last
        # valid step from the padded output instead. A bidirectional one must pack to be exact.
        self.pack = bidirectional if pack == "auto" else bool(pack)
        self.output_mode = output_mode
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.encoder = InputEncoder(
            input_size=input_size, vocab_size=vocab_size, embedding_dim=embedding_dim
        )
        kwargs = dict(
            input_size=self.encoder.output_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        if cell == "rnn":
            kwargs["nonlinearity"] = nonlinearity
        self.rnn = self.make_recurrent(cell, **kwargs)
        # the recurrent weights are drawn before the head is built, as in the tutorial's two-layer net, so the
        # same seed gives the same numbers
        init_recurrent_(self, init, init_std, cell, chrono_tmax, forget_bias)
        self.head = nn.Linear(hidden_size * self.num_directions, output_size)

    def make_recurrent(self, cell: str, **kwargs) -> nn.Module:
        """The recurrent layer stack: a fused nn.RNN, nn.LSTM or nn.GRU."""
        return CELLS[cell](**kwargs)

    def features(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """Run the recurrent stack: returns every step's output (batch, seq, dirs*hidden) and the final state."""
        emb = self.encoder(x)  # (batch, seq, features)
        if self.pack and lengths is not None:
            packed = nn.utils.rnn.pack_padded_sequence(
                emb, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            out, state = self.rnn(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(
                out, batch_first=True, total_length=emb.shape[1]
            )
            return out, state
        return self.rnn(emb)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        out, _ = self.features(x, lengths)  # (batch, seq, dirs*hidden)
        return self.readout(out, lengths)

    @property
    def carries_state(self) -> bool:
        """Whether ``carry`` can continue a text from a state: a unidirectional net only."""
        return self.num_directions == 1

    def carry(
        self, x: torch.Tensor, state: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """The head at every step of ``x`` read on from ``state`` (None: zeros), and the state
        after its last step: h_n, or (h_n, c_n) for the LSTM, each (layers, batch, hidden)."""
        if not self.carries_state:
            raise ValueError("a bidirectional net reads ahead: it cannot carry its state on")
        out, state = self.rnn(self.encoder(x), state)  # (batch, seq, hidden)
        return self.head(out), state  # (batch, seq, output)

    def readout(self, out: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The head over the stack's outputs (batch, seq, dirs*hidden): every step or the last valid."""
        if self.output_mode == "sequence":
            return self.head(out)  # (batch, seq, output)
        if self.num_directions == 2:
            # forward direction: its last valid step; backward direction: step 0 has seen the whole
            # sequence (exact when packed; with padding it has also read the padded tail)
            half = self.hidden_size
            fwd = last_valid_step(out[..., :half], lengths)
            bwd = out[:, 0, half:]
            return self.head(torch.cat([fwd, bwd], dim=-1))
        return self.head(last_valid_step(out, lengths))  # (batch, output)
