"""NumPy references: the hand-written RNN loop and the stacked-layer formula, with no torch inside.

``NumpyRNN`` is the classic demo loop: append the input to the state, multiply by one weight
matrix, tanh, then a linear output. ``rnn_forward`` is what ``nn.RNN`` computes, layer by layer:
``h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``. Both are written to be read and checked
against the torch layers, not to be fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

ACTIVATIONS = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0)}


class NumpyRNN:
    """``state_t = tanh([state_{t-1}, x_t] @ w_cell_state + b_cell)``, ``y_t = state_t @ w_output + b_output``.

    ``w_cell_state`` is (hidden + input, hidden): its first ``hidden`` rows read the state, the
    rest read the input, because the input is appended after the state.
    """

    def __init__(
        self,
        w_cell_state: np.ndarray,
        b_cell: np.ndarray,
        w_output: np.ndarray,
        b_output: float | np.ndarray,
    ) -> None:
        self.w_cell_state = np.asarray(w_cell_state, dtype=np.float64)
        self.b_cell = np.asarray(b_cell, dtype=np.float64)
        self.w_output = np.asarray(w_output, dtype=np.float64)
        self.b_output = np.asarray(b_output, dtype=np.float64)
        self.hidden_size = self.b_cell.shape[0]
        self.input_size = self.w_cell_state.shape[0] - self.hidden_size
        if self.w_cell_state.shape != (self.hidden_size + self.input_size, self.hidden_size):
            raise ValueError(
                f"w_cell_state must be (hidden + input, hidden) = (*, {self.hidden_size}), "
                f"got {self.w_cell_state.shape}"
            )
        if self.input_size < 1:
            raise ValueError("w_cell_state needs at least one row for the input")

    def step(self, state: np.ndarray, x: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step: returns (new state (hidden,), output)."""
        combined = np.append(state, x)  # (hidden + input,)
        state = np.tanh(np.dot(combined, self.w_cell_state) + self.b_cell)  # (hidden,)
        output = np.dot(state, self.w_output) + self.b_output
        return state, output

    def run(
        self, inputs: Sequence[float] | np.ndarray, state: np.ndarray | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The loop over ``inputs``: every step's state and output, from a zero state by default."""
        state = np.zeros(self.hidden_size) if state is None else np.asarray(state, np.float64)
        states, outputs = [], []
        for x in inputs:
            state, output = self.step(state, x)
            states.append(state)
            outputs.append(output)
        return states, outputs

    def fused_state_dict(self) -> dict[str, torch.Tensor]:
        """The same weights under ``RecurrentNet``'s names (``rnn.weight_ih_l0``, ``head.weight`` ...)."""
        hidden = self.hidden_size
        w = torch.from_numpy(self.w_cell_state)
        w_out = torch.from_numpy(self.w_output).reshape(-1, hidden)  # (outputs, hidden)
        return {
            "rnn.weight_ih_l0": w[hidden:].T.contiguous(),  # (hidden, input)
            "rnn.weight_hh_l0": w[:hidden].T.contiguous(),  # (hidden, hidden)
            "rnn.bias_ih_l0": torch.from_numpy(self.b_cell).clone(),
            "rnn.bias_hh_l0": torch.zeros(hidden, dtype=torch.float64),
            "head.weight": w_out.clone(),
            "head.bias": torch.from_numpy(self.b_output).reshape(-1).clone(),
        }

    def to_rnn_cell(self) -> tuple[nn.RNNCell, nn.Linear]:
        """An ``nn.RNNCell`` and an ``nn.Linear`` output (float64) holding these weights."""
        weights = self.fused_state_dict()
        cell = nn.RNNCell(self.input_size, self.hidden_size, dtype=torch.float64)
        head = nn.Linear(self.hidden_size, weights["head.weight"].shape[0], dtype=torch.float64)
        cell.load_state_dict({k[4:-3]: v for k, v in weights.items() if k.startswith("rnn.")})
        head.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("head.")})
        return cell, head

    def to_net(self, unrolled: bool = False) -> nn.Module:
        """rnnlab's ``model=rnn`` (or ``model=rnn_cell``) net, float64, per-step head, these weights."""
        from rnnlab.nets.recurrent import RecurrentNet
        from rnnlab.nets.unrolled import UnrolledNet, fused_to_cell_names

        weights = self.fused_state_dict()
        kwargs = dict(
            output_size=weights["head.weight"].shape[0],
            cell="rnn",
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            output_mode="sequence",
        )
        net = (UnrolledNet if unrolled else RecurrentNet)(**kwargs).to(torch.float64)
        net.load_state_dict(fused_to_cell_names(weights) if unrolled else weights)
        return net


def rnn_forward(
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    h0: np.ndarray | None = None,
    nonlinearity: str = "tanh",
) -> tuple[np.ndarray, np.ndarray]:
    """What ``nn.RNN`` computes, in NumPy: x (seq, batch, input) -> output (seq, batch, hidden), h_n.

    ``params`` uses ``nn.RNN``'s names (``weight_ih_l0`` ...). Layer l at step t reads layer l-1's
    output at the *same* step t and its own state at step t-1:
    ``h^l_t = f(W_ih^l h^{l-1}_t + b_ih^l + W_hh^l h^l_{t-1} + b_hh^l)``, with ``h^{-1}_t = x_t``.
    """
    f = ACTIVATIONS[nonlinearity]
    num_layers = sum(1 for k in params if k.startswith("weight_ih_l"))
    hidden = np.asarray(params["weight_hh_l0"]).shape[0]
    layer_input = np.asarray(x, dtype=np.float64)  # (seq, batch, input)
    seq_len, batch = layer_input.shape[:2]
    h0 = np.zeros((num_layers, batch, hidden)) if h0 is None else np.asarray(h0, np.float64)
    h_n = []
    for layer in range(num_layers):
        w_ih, w_hh = (
            np.asarray(params[f"{k}_l{layer}"], np.float64) for k in ("weight_ih", "weight_hh")
        )
        b = sum(
            np.asarray(params.get(f"{k}_l{layer}", 0.0), np.float64) for k in ("bias_ih", "bias_hh")
        )
        h = h0[layer]  # (batch, hidden)
        outputs = []
        for t in range(seq_len):
            h = f(layer_input[t] @ w_ih.T + h @ w_hh.T + b)
            outputs.append(h)
        layer_input = np.stack(outputs)  # (seq, batch, hidden): the next layer's input
        h_n.append(h)
    return layer_input, np.stack(h_n)
