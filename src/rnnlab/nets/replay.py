"""Step-by-step replays of the nets: every hidden state, gate and cell state, in a graph.

A fused ``nn.RNN``/``nn.LSTM``/``nn.GRU`` hides its per-step states inside one kernel. ``trace``
reruns a net one layer and one step at a time with the same weights, so that each step's hidden
state is a separate tensor: autograd can then give ``dL/dh_t`` through the whole recurrence, and
the gates can be drawn. The replay computes the same outputs as the fused forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from rnnlab.nets.char_rnn import CharRNN
from rnnlab.nets.recurrent import RecurrentNet


@dataclass
class Trace:
    """What a replay records for a batch of ``batch`` sequences of ``seq`` steps.

    ``output``: what ``net(x, lengths)`` returns. ``hidden[layer][t]``: the (batch, hidden) state
    of step ``t``, a node of the graph that every later step and the output read, so
    ``torch.autograd.grad(loss, hidden[layer])`` is ``dL/dh_t`` through time. ``step_outputs``:
    (batch, seq, output), what the head reads if a sequence ended at each step.
    ``gates[layer]``: name -> (batch, seq, hidden) detached values (``i f g o c`` for LSTM,
    ``r z n`` for GRU; empty otherwise).
    """

    output: torch.Tensor
    hidden: list[list[torch.Tensor]]
    step_outputs: torch.Tensor
    gates: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def hidden_sequence(self, layer: int) -> torch.Tensor:
        """(batch, seq, hidden): one layer's states stacked over time, detached."""
        return torch.stack([h.detach() for h in self.hidden[layer]], dim=1)


def rnn_step(
    x: torch.Tensor, h: torch.Tensor, weights: list[torch.Tensor], nonlinearity: str
) -> torch.Tensor:
    """``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` (or relu)."""
    w_ih, w_hh, b_ih, b_hh = weights
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_step(
    x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, weights: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One LSTM step in torch's gate order (i, f, g, o); returns the gates and the new ``c``, ``h``."""
    w_ih, w_hh, b_ih, b_hh = weights
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g  # c_t = f_t * c_{t-1} + i_t * g_t
    h = o * torch.tanh(c)  # h_t = o_t * tanh(c_t)
    return {"i": i, "f": f, "g": g, "o": o, "c": c, "h": h}


def gru_step(
    x: torch.Tensor, h: torch.Tensor, weights: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One GRU step in torch's gate order (r, z, n); returns the gates and the new ``h``."""
    w_ih, w_hh, b_ih, b_hh = weights
    xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)  # n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h = (1 - z) * n + z * h  # h_t = (1 - z_t) * n_t + z_t * h_{t-1}
    return {"r": r, "z": z, "n": n, "h": h}


def layer_weights(rnn: nn.Module, layer: int) -> list[torch.Tensor]:
    """``[W_ih, W_hh, b_ih, b_hh]`` of one forward-direction layer (zeros where bias=False).

    ``rnn`` is a fused ``nn.RNN``/``nn.LSTM``/``nn.GRU`` or a ``CellStack`` of one cell per layer.
    """
    owner, suffix = (rnn.cells[layer], "") if hasattr(rnn, "cells") else (rnn, f"_l{layer}")
    w_ih = getattr(owner, f"weight_ih{suffix}")
    w_hh = getattr(owner, f"weight_hh{suffix}")
    if rnn.bias:
        return [w_ih, w_hh, getattr(owner, f"bias_ih{suffix}"), getattr(owner, f"bias_hh{suffix}")]
    zeros = w_ih.new_zeros(w_ih.shape[0])
    return [w_ih, w_hh, zeros, zeros]


def replay_recurrent(
    net: RecurrentNet, x: torch.Tensor, lengths: torch.Tensor | None = None
) -> Trace:
    """Rerun a unidirectional ``RecurrentNet`` (or ``UnrolledNet``) step by step with its weights."""
    if net.num_directions != 1:
        raise ValueError("a step-by-step replay needs a unidirectional net (bidirectional=false)")
    rnn = net.rnn
    layer_input = net.encoder(x)  # (batch, seq, features)
    batch, seq_len, _ = layer_input.shape
    hidden: list[list[torch.Tensor]] = []
    gates: list[dict[str, torch.Tensor]] = []
    for layer in range(net.num_layers):
        weights = layer_weights(rnn, layer)
        h = layer_input.new_zeros(batch, net.hidden_size)
        c = layer_input.new_zeros(batch, net.hidden_size)
        states: list[torch.Tensor] = []
        recorded: dict[str, list[torch.Tensor]] = {}
        for t in range(seq_len):
            x_t = layer_input[:, t]
            if net.cell == "rnn":
                h = rnn_step(x_t, h, weights, rnn.nonlinearity)
            else:
                step = (
                    lstm_step(x_t, h, c, weights)
                    if net.cell == "lstm"
                    else gru_step(x_t, h, weights)
                )
                h, c = step.pop("h"), step.get("c", c)
                for name, value in step.items():
                    recorded.setdefault(name, []).append(value.detach())
            states.append(h)
        hidden.append(states)
        gates.append({name: torch.stack(v, dim=1) for name, v in recorded.items()})
        layer_input = torch.stack(states, dim=1)  # (batch, seq, hidden)
        if net.training and rnn.dropout and layer < net.num_layers - 1:
            layer_input = nn.functional.dropout(layer_input, rnn.dropout, training=True)
    out = layer_input  # (batch, seq, hidden): the top layer's states
    return Trace(
        output=net.readout(out, lengths),
        hidden=hidden,
        step_outputs=net.head(out).detach(),  # (batch, seq, output)
        gates=gates,
    )


def replay_char_rnn(net: CharRNN, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Trace:
    """Rerun a ``CharRNN``; its state at step t is the hidden that step reads, ``h_{t-1}``.

    The tutorial cell computes step t's output from ``[x_t, h_{t-1}]``, so the state a step reads is
    the one the loss depends on; the first is ``h_0 = 0``, made a graph node here.
    """
    batch = x.shape[0]
    h0 = net.cell.i2h.weight.new_zeros(batch, net.hidden_size)
    outputs, states = net.unroll(x, lengths, hidden=h0.requires_grad_(torch.is_grad_enabled()))
    step_outputs = torch.stack(outputs, dim=1)  # (batch, seq, output)
    output = step_outputs if net.output_mode == "sequence" else outputs[-1]
    return Trace(output=output, hidden=[states], step_outputs=step_outputs.detach(), gates=[{}])


def trace(net: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None = None) -> Trace:
    """Replay ``net`` on a batch step by step; nets of other kinds may define ``net.trace``."""
    if isinstance(net, RecurrentNet):
        return replay_recurrent(net, x, lengths)
    if isinstance(net, CharRNN):
        return replay_char_rnn(net, x, lengths)
    if hasattr(net, "trace"):
        return net.trace(x, lengths)
    raise ValueError(f"{type(net).__name__} has no step-by-step replay")
