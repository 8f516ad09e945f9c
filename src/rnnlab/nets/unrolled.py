"""Cell-by-cell recurrent nets: nn.RNNCell, nn.LSTMCell or nn.GRUCell run step by step over time.

``CellStack`` is a drop-in for a unidirectional fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (same
arguments, same inputs and outputs, same parameter draws under the same seed) whose loop is plain
Python; ``UnrolledNet`` is ``RecurrentNet`` built on it (``model=rnn_cell|lstm_cell|gru_cell``).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from rnnlab.nets.recurrent import CELLS, RecurrentNet

CELL_CLASSES = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
FUSED_TO_MODE = {nn.RNN: "rnn", nn.LSTM: "lstm", nn.GRU: "gru"}

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_FUSED_NAME = re.compile(r"(^|\.)((?:weight|bias)_(?:ih|hh))_l(\d+)$")
_CELL_NAME = re.compile(r"(^|\.)cells\.(\d+)\.((?:weight|bias)_(?:ih|hh))$")
_FUSED_ATTRIBUTE = re.compile(r"((?:weight|bias)_(?:ih|hh))_l(\d+)")


def fused_to_cell_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename fused-layer keys to cell-stack keys: ``weight_ih_l1`` -> ``cells.1.weight_ih``."""
    return {_FUSED_NAME.sub(r"\1cells.\3.\2", k): v for k, v in state_dict.items()}


def cell_to_fused_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename cell-stack keys to fused-layer keys: ``cells.1.weight_ih`` -> ``weight_ih_l1``."""
    return {_CELL_NAME.sub(r"\1\3_l\2", k): v for k, v in state_dict.items()}


class CellStack(nn.Module):
    """``num_layers`` recurrent cells stacked and unrolled over time, step by step.

    At step t, layer l computes its new state from the layer below's output at the same step
    (the input ``x_t`` for layer 0) and its own state at step t-1; for the plain RNN cell
    ``h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``. Dropout (training only) falls between
    layers, as in the fused layers.
    """

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        if mode not in CELL_CLASSES:
            raise ValueError(f"model.cell must be one of {sorted(CELL_CLASSES)}, got {mode!r}")
        if bidirectional:
            raise ValueError(
                "model.bidirectional is not available for cell-by-cell nets; "
                "use the fused model=rnn, lstm or gru"
            )
        if mode != "rnn" and nonlinearity != "tanh":
            raise ValueError(
                f"model.nonlinearity={nonlinearity!r} only applies to cell 'rnn', not {mode!r}"
            )
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.nonlinearity = nonlinearity
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        extra = {"nonlinearity": nonlinearity} if mode == "rnn" else {}
        # parameters are created (and drawn) layer by layer in the fused layer's order
        self.cells = nn.ModuleList(
            CELL_CLASSES[mode](input_size if i == 0 else hidden_size, hidden_size, bias, **extra)
            for i in range(num_layers)
        )

    def __getattr__(self, name: str):
        """``weight_ih_l1`` and the other fused names read the matching cell's parameter."""
        match = _FUSED_ATTRIBUTE.fullmatch(name)
        if match and "_modules" in self.__dict__ and "cells" in self._modules:
            layer = int(match.group(2))
            if layer < len(self._modules["cells"]):
                return getattr(self._modules["cells"][layer], match.group(1))
        return super().__getattr__(name)

    def extra_repr(self) -> str:
        return (
            f"{self.mode}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"batch_first={self.batch_first}, dropout={self.dropout}"
        )

    def forward(
        self,
        input: torch.Tensor,
        hx: State | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Run the stack like the fused layer: returns (output, h_n) or (output, (h_n, c_n)).

        With ``lengths`` each sequence's state stops at its last valid step and padded outputs
        are zero, as with a packed sequence through the fused layer.
        """
        if input.dim() != 3:
            raise ValueError(f"expected a 3-D input (seq, batch, features), got {input.dim()}-D")
        x = input.transpose(0, 1) if self.batch_first else input  # (seq, batch, features)
        seq_len, batch = x.shape[0], x.shape[1]
        states = self._initial_states(hx, batch, x)
        valid = None
        if lengths is not None:
            steps = torch.arange(seq_len, device=x.device).unsqueeze(1)
            valid = (steps < lengths.to(x.device).unsqueeze(0)).unsqueeze(-1)  # (seq, batch, 1)
        last = self.num_layers - 1
        outputs = []
        for t in range(seq_len):
            layer_input = x[t]  # (batch, features)
            for layer, cell in enumerate(self.cells):
                new = cell(layer_input, states[layer])
                if valid is not None:
                    new = _where(valid[t], new, states[layer])
                states[layer] = new
                layer_input = new[0] if self.mode == "lstm" else new  # (batch, hidden)
                if layer < last and self.dropout > 0 and self.training:
                    layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
            if valid is not None:
                layer_input = layer_input * valid[t]
            outputs.append(layer_input)
        output = torch.stack(outputs)  # (seq, batch, hidden)
        if self.batch_first:
            output = output.transpose(0, 1)  # (batch, seq, hidden)
        if self.mode == "lstm":
            h_n = torch.stack([h for h, _ in states])  # (layers, batch, hidden)
            c_n = torch.stack([c for _, c in states])
            return output, (h_n, c_n)
        return output, torch.stack(states)  # (layers, batch, hidden)

    def _initial_states(self, hx: State | None, batch: int, x: torch.Tensor) -> list[State]:
        """One state per layer: h, or (h, c) for the LSTM; zeros when ``hx`` is None."""
        if hx is None:
            zeros = x.new_zeros(self.num_layers, batch, self.hidden_size)
            hx = (zeros, zeros) if self.mode == "lstm" else zeros
        if self.mode == "lstm":
            h0, c0 = hx
            return [(h0[i], c0[i]) for i in range(self.num_layers)]
        return [hx[i] for i in range(self.num_layers)]

    def fused_state_dict(self) -> dict[str, torch.Tensor]:
        """This stack's weights under the fused layer's names (``weight_ih_l0`` ...)."""
        return cell_to_fused_names(self.state_dict())

    def load_fused_(self, fused: nn.RNNBase) -> CellStack:
        """Copy the weights of a fused nn.RNN / nn.LSTM / nn.GRU of the same sizes into the cells."""
        check_fused(fused)
        self.load_state_dict(fused_to_cell_names(fused.state_dict()))
        return self

    def copy_to_(self, fused: nn.RNNBase) -> nn.RNNBase:
        """Copy the cells' weights into a fused layer of the same sizes."""
        check_fused(fused)
        fused.load_state_dict(self.fused_state_dict())
        return fused

    @classmethod
    def from_fused(cls, fused: nn.RNNBase) -> CellStack:
        """A cell stack with the same configuration, weights, dtype and device as ``fused``."""
        mode = check_fused(fused)
        stack = cls(
            mode,
            fused.input_size,
            fused.hidden_size,
            fused.num_layers,
            nonlinearity=getattr(fused, "nonlinearity", "tanh"),
            bias=fused.bias,
            batch_first=fused.batch_first,
            dropout=fused.dropout,
        )
        weight = fused.weight_ih_l0
        return stack.to(device=weight.device, dtype=weight.dtype).load_fused_(fused)

    def to_fused(self) -> nn.RNNBase:
        """The fused nn.RNN / nn.LSTM / nn.GRU with this stack's configuration and weights."""
        kwargs = dict(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            batch_first=self.batch_first,
            dropout=self.dropout,
        )
        if self.mode == "rnn":
            kwargs["nonlinearity"] = self.nonlinearity
        weight = self.cells[0].weight_ih
        fused = CELLS[self.mode](**kwargs).to(device=weight.device, dtype=weight.dtype)
        return self.copy_to_(fused)


def check_fused(fused: nn.Module) -> str:
    """The mode ('rnn', 'lstm', 'gru') of a fused layer a cell stack can mirror; else ValueError."""
    mode = FUSED_TO_MODE.get(type(fused))
    if mode is None:
        raise ValueError(f"expected an nn.RNN, nn.LSTM or nn.GRU, got {type(fused).__name__}")
    if fused.bidirectional or getattr(fused, "proj_size", 0):
        raise ValueError("a cell stack mirrors only unidirectional layers without projections")
    return mode


def _where(keep: torch.Tensor, new: State, old: State) -> State:
    """``new`` where ``keep`` (batch, 1) is true, else ``old``; for h or (h, c)."""
    if isinstance(new, tuple):
        return tuple(torch.where(keep, n, o) for n, o in zip(new, old, strict=True))
    return torch.where(keep, new, old)


class UnrolledNet(RecurrentNet):
    """``RecurrentNet`` whose recurrent stack is a ``CellStack`` (cells stepped over time).

    Same arguments, heads and initialization as ``RecurrentNet``; under the same seed both
    draw the same weights, and ``to_recurrent`` / ``load_recurrent_`` copy weights across.
    """

    def __init__(
        self, output_size: int, cell: str = "lstm", *, bidirectional: bool = False, **kwargs
    ) -> None:
        """``RecurrentNet``'s arguments, but for ``bidirectional`` and ``pack``."""
        if bidirectional:
            raise ValueError(
                "model.bidirectional is not available for cell-by-cell nets; "
                "use the fused model=rnn, lstm or gru"
            )
        if "pack" in kwargs:
            raise TypeError("UnrolledNet steps each sequence to its length: it takes no pack")
        super().__init__(output_size, cell, **kwargs, pack=False)
        self.config = {"output_size": output_size, "cell": cell, **kwargs}  # the fused twin's

    def make_recurrent(self, cell: str, **kwargs) -> nn.Module:
        """The recurrent layer stack: cells stepped over time."""
        return CellStack(cell, **kwargs)

    def features(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """Every step's output (batch, seq, hidden) and the state at each sequence's last valid step."""
        return self.rnn(self.encoder(x), lengths=lengths)

    def load_recurrent_(self, net: RecurrentNet) -> UnrolledNet:
        """Copy every weight (encoder, recurrent layers, head) of a fused net of the same sizes."""
        check_fused(net.rnn)
        self.load_state_dict(fused_to_cell_names(net.state_dict()))
        return self

    def to_recurrent(self) -> RecurrentNet:
        """The fused ``RecurrentNet`` with this net's sizes and weights."""
        weight = self.head.weight
        net = RecurrentNet(**self.config).to(device=weight.device, dtype=weight.dtype)
        net.load_state_dict(cell_to_fused_names(self.state_dict()))
        return net
