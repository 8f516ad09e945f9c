"""Recurrent nets beyond the fused trio: minGRU, minLSTM, LRU, S4D (parallel scans) and IndRNN.

Each layer maps ``(batch, seq, input)`` to ``(batch, seq, hidden)`` and keeps a per-sequence state
``h_t``; it computes a whole sequence at once (``forward``: a parallel scan where the recurrence
is linear in ``h``) and one step at a time (``step``: used for generation, the reference loop and
the step-by-step replay). ``ModernStack`` stacks ``num_layers`` of one kind like a fused
``nn.GRU`` (same call: ``(output, h_n) = stack(input, hx, lengths)``), and ``ModernNet`` puts the
usual encoder and heads around it (``model=mingru|minlstm|lru|s4d|indrnn``).

- minGRU / minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): the gates read ``x_t`` only,
  so ``h_t = a_t * h_{t-1} + b_t`` is a linear recurrence; the scan runs in log space
  (``scan.log_space_scan``). ``h~_t = g(W x_t)`` with ``g(x) = x + 1/2`` for ``x >= 0`` and
  ``sigmoid(x)`` below, so ``b_t > 0`` and its logarithm exists.
- LRU (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long Sequences"):
  ``h_t = lambda * h_{t-1} + gamma * (B x_t)`` with complex diagonal ``lambda =
  exp(-exp(nu_log) + i exp(theta_log))`` drawn uniformly on the ring ``r_min <= |lambda| <=
  r_max``, phases in ``[0, max_phase]``, the input normalised by ``gamma = sqrt(1 - |lambda|^2)``;
  ``y_t = GELU(Re(C h_t) + D x_t)``.
- S4D (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space
  Models"): per channel ``state_size`` complex modes ``A_n = -1/2 + i pi n`` (S4D-Lin), a learnt
  step ``dt`` in ``[dt_min, dt_max]`` and the zero-order-hold discretisation
  ``h_t = exp(dt A) h_{t-1} + (exp(dt A) - 1) / A * u_t``; ``y_t = GELU(2 Re(C h_t) + D u_t)``.
- IndRNN (Li et al. 2018): ``h_t = relu(W x_t + u * h_{t-1} + b)`` with one recurrent weight per
  unit, ``|u| <= recurrent_bound`` (clamped, or ``bound * tanh`` of a free parameter). The
  recurrence is not linear, so it runs step by step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.config_checks import integer, number, require
from rnnlab.nets.common import InputEncoder, check_dims, last_valid_step
from rnnlab.nets.scan import causal_conv, diagonal_scan, log_space_scan, powers

SCANS = ("parallel", "loop")


def g(x: torch.Tensor) -> torch.Tensor:
    """minGRU's positive activation: ``x + 1/2`` for ``x >= 0``, ``sigmoid(x)`` below."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    """``log g(x)``, computed without forming ``g``."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"model.{name} must be a positive number, got {value!r}")


class ScanLayer(nn.Module):
    """One recurrent layer: ``forward(x, h0, lengths) -> (y, h_last)`` over a whole sequence and
    ``step(x_t, h) -> (y_t, h, gates)`` for one step.

    ``y`` is (batch, seq, hidden), ``h_last`` (batch, state_width) the state at each sequence's
    last valid step. ``is_complex`` layers keep a complex state, shown to the replay as its real
    and imaginary parts side by side.
    """

    is_complex = False
    state_width: int

    def zero_state(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(like.dtype, torch.complex64) if self.is_complex else like.dtype
        return torch.zeros(batch, self.state_width, dtype=dtype, device=like.device)

    def emit(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The layer's output at a step from that step's state and input (the state itself here)."""
        return h

    def to_real(self, h: torch.Tensor) -> torch.Tensor:
        """The state as a real tensor (batch, width or 2 * width)."""
        return torch.cat([h.real, h.imag], dim=-1) if self.is_complex else h

    def from_real(self, r: torch.Tensor) -> torch.Tensor:
        if not self.is_complex:
            return r
        return torch.complex(r[..., : self.state_width], r[..., self.state_width :])


class MinGRULayer(ScanLayer):
    """``z_t = sigmoid(W_z x_t)``, ``h_t = (1 - z_t) * h_{t-1} + z_t * g(W_h x_t)``."""

    def __init__(self, input_size: int, hidden_size: int, chunk: int = 256) -> None:
        super().__init__()
        self.state_width = hidden_size
        self.chunk = chunk
        self.linear = nn.Linear(input_size, 2 * hidden_size)  # [z | h~]

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, lengths=None):
        k, pre = self.linear(x).chunk(2, dim=-1)
        log_z = -F.softplus(-k)  # log sigmoid(k)
        log_keep = -F.softplus(k)  # log (1 - sigmoid(k))
        states = log_space_scan(log_keep, log_z + log_g(pre), h0, self.chunk)
        return states, last_valid_step(states, lengths)

    def step(self, x: torch.Tensor, h: torch.Tensor):
        k, pre = self.linear(x).chunk(2, dim=-1)
        z = torch.sigmoid(k)
        h = (1 - z) * h + z * g(pre)
        return h, h, {"z": z}


class MinLSTMLayer(ScanLayer):
    """``f'_t, i'_t = f_t, i_t / (f_t + i_t)``, ``h_t = f'_t * h_{t-1} + i'_t * g(W_h x_t)``;
    ``f_t = sigmoid(W_f x_t + b_f)``, ``i_t = sigmoid(W_i x_t + b_i)``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        chunk: int = 256,
        forget_bias: float | None = None,
    ) -> None:
        super().__init__()
        self.state_width = hidden_size
        self.chunk = chunk
        self.linear = nn.Linear(input_size, 3 * hidden_size)  # [f | i | h~]
        if forget_bias is not None:
            with torch.no_grad():
                self.linear.bias[:hidden_size] = forget_bias

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, lengths=None):
        f, i, pre = self.linear(x).chunk(3, dim=-1)
        diff = F.softplus(-f) - F.softplus(-i)  # log i_t - log f_t
        log_f = -F.softplus(diff)  # log f_t / (f_t + i_t)
        log_i = -F.softplus(-diff)  # log i_t / (f_t + i_t)
        states = log_space_scan(log_f, log_i + log_g(pre), h0, self.chunk)
        return states, last_valid_step(states, lengths)

    def step(self, x: torch.Tensor, h: torch.Tensor):
        f, i, pre = self.linear(x).chunk(3, dim=-1)
        f, i = torch.sigmoid(f), torch.sigmoid(i)
        f, i = f / (f + i), i / (f + i)
        h = f * h + i * g(pre)
        return h, h, {"f": f, "i": i}


class IndRNNLayer(ScanLayer):
    """``h_t = relu(W x_t + b + u * h_{t-1})``, one recurrent weight ``u`` per unit, ``|u| <= bound``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        recurrent_bound: float = 1.0,
        bound_mode: str = "clamp",
    ) -> None:
        super().__init__()
        self.state_width = hidden_size
        self.bound = float(recurrent_bound)
        self.bound_mode = bound_mode
        self.linear = nn.Linear(input_size, hidden_size)
        # |u| drawn uniformly in [0, bound) as in the paper's adding and sequential MNIST runs
        u = torch.rand(hidden_size) * self.bound
        if bound_mode == "tanh":
            u = torch.atanh((u / self.bound).clamp(max=0.99))
        self.recurrent_weight = nn.Parameter(u)

    def u(self) -> torch.Tensor:
        """The recurrent weights as used, within ``[-bound, bound]``."""
        w = self.recurrent_weight
        if self.bound_mode == "tanh":
            return self.bound * torch.tanh(w)
        return w.clamp(-self.bound, self.bound)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, lengths=None):
        wx = self.linear(x)  # (batch, seq, hidden): every step's input at once
        u = self.u()
        h = wx.new_zeros(wx.shape[0], wx.shape[2]) if h0 is None else h0
        states = []
        for w_t in wx.unbind(1):  # unbind: one gradient for wx, not one full-size slice per step
            h = torch.relu(w_t + u * h)
            states.append(h)
        states = torch.stack(states, dim=1)
        return states, last_valid_step(states, lengths)

    def step(self, x: torch.Tensor, h: torch.Tensor):
        h = torch.relu(self.linear(x) + self.u() * h)
        return h, h, {}


class LRULayer(ScanLayer):
    """The linear recurrent unit: a complex diagonal recurrence of ``state_size`` modes."""

    is_complex = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        state_size: int = 64,
        r_min: float = 0.0,
        r_max: float = 0.99,
        max_phase: float = 2 * math.pi,
    ) -> None:
        super().__init__()
        self.state_width = state_size
        u1, u2 = torch.rand(state_size), torch.rand(state_size)
        # |lambda| uniform on the ring r_min..r_max: nu = -log|lambda|
        nu = -0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        self.nu_log = nn.Parameter(torch.log(nu))
        self.theta_log = nn.Parameter(torch.log(max_phase * u2))
        magnitude = torch.exp(-nu)
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - magnitude**2)))
        self.B_re = nn.Parameter(torch.randn(state_size, input_size) / math.sqrt(2 * input_size))
        self.B_im = nn.Parameter(torch.randn(state_size, input_size) / math.sqrt(2 * input_size))
        self.C_re = nn.Parameter(torch.randn(hidden_size, state_size) / math.sqrt(state_size))
        self.C_im = nn.Parameter(torch.randn(hidden_size, state_size) / math.sqrt(state_size))
        self.D = nn.Linear(input_size, hidden_size)

    def log_lambda(self) -> torch.Tensor:
        """``log lambda = -exp(nu_log) + i exp(theta_log)``, (state_size,) complex."""
        return torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log))

    def drive(self, x: torch.Tensor) -> torch.Tensor:
        """``gamma * (B x)``, complex, over the last axis of ``x``."""
        gamma = torch.exp(self.gamma_log)
        return torch.complex(x @ self.B_re.T * gamma, x @ self.B_im.T * gamma)

    def readout(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``GELU(Re(C h) + D x)``."""
        return F.gelu(h.real @ self.C_re.T - h.imag @ self.C_im.T + self.D(x))

    def emit(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.readout(h, x)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, lengths=None):
        states = diagonal_scan(self.log_lambda(), self.drive(x), h0)
        return self.readout(states, x), last_valid_step(states, lengths)

    def step(self, x: torch.Tensor, h: torch.Tensor):
        h = torch.exp(self.log_lambda()) * h + self.drive(x)
        return self.readout(h, x), h, {}


class S4DLayer(ScanLayer):
    """A diagonal state-space layer: ``hidden_size`` channels of ``state_size`` complex modes each."""

    is_complex = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        state_size: int = 16,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
    ) -> None:
        super().__init__()
        self.channels, self.modes = hidden_size, state_size
        self.state_width = hidden_size * state_size
        self.encode = nn.Linear(input_size, hidden_size)
        log_dt = torch.rand(hidden_size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(hidden_size, state_size)))
        self.A_imag = nn.Parameter(
            math.pi * torch.arange(state_size).repeat(hidden_size, 1).float()
        )
        self.C_re = nn.Parameter(torch.randn(hidden_size, state_size) * math.sqrt(0.5))
        self.C_im = nn.Parameter(torch.randn(hidden_size, state_size) * math.sqrt(0.5))
        self.D = nn.Parameter(torch.randn(hidden_size))

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``dt A`` (the log of the step's decay) and ``(exp(dt A) - 1) / A``, (channels, modes)."""
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        dtA = A * torch.exp(self.log_dt).unsqueeze(-1)
        return dtA, (torch.exp(dtA) - 1) / A

    def C(self) -> torch.Tensor:
        return torch.complex(self.C_re, self.C_im)

    def emit(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.readout(h, self.encode(x))

    def readout(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``GELU(2 Re(sum_n C_n h_n) + D u)`` per channel; ``h`` is (..., channels * modes)."""
        h = h.unflatten(-1, (self.channels, self.modes))
        y = 2 * (h.real * self.C_re - h.imag * self.C_im).sum(-1)
        return F.gelu(y + self.D * u)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, lengths=None):
        """The convolution view: ``y = K * u`` with ``K_l = 2 Re(sum_n C_n dB_n exp(dt A_n l))``
        per channel (by FFT), and the last valid state ``sum_k exp(dt A (L-1-k)) dB u_k`` read
        off sequences right-aligned at their last valid step."""
        u = self.encode(x)  # (batch, seq, channels)
        batch, seq_len, _ = u.shape
        dtA, dB = self.discrete()  # (channels, modes)
        decay = powers(dtA.flatten(), 0, seq_len + 1).unflatten(-1, (self.channels, self.modes))
        kernel = 2 * (self.C() * dB * decay[:seq_len]).real.sum(-1)  # (seq, channels)
        y = causal_conv(kernel, u)
        if h0 is not None:  # + 2 Re(sum_n C_n a_n^(t+1) h0_n)
            h0c = h0.unflatten(-1, (self.channels, self.modes))
            y = y + 2 * torch.einsum("tcm,bcm->btc", self.C() * decay[1:], h0c).real
        # the state at step L-1: sequences shifted right so that each ends at the last step
        if lengths is None:
            aligned = u
        else:
            shift = seq_len - lengths.to(u.device).clamp(min=1, max=seq_len)  # (batch,)
            index = torch.arange(seq_len, device=u.device).unsqueeze(0) - shift.unsqueeze(1)
            aligned = u.gather(1, index.clamp(min=0).unsqueeze(-1).expand_as(u))
            aligned = aligned * (index >= 0).unsqueeze(-1)
        back = decay[:seq_len].flip(0)  # (seq, channels, modes): a^(T-1-k)
        h_last = dB * torch.einsum("kcm,bkc->bcm", back, aligned.to(back.dtype))
        if h0 is not None:
            length = torch.full((batch,), seq_len, device=u.device)
            if lengths is not None:
                length = length - shift
            h_last = h_last + torch.exp(length.view(-1, 1, 1) * dtA) * h0c
        return F.gelu(y + self.D * u), h_last.flatten(-2)

    def step(self, x: torch.Tensor, h: torch.Tensor):
        u = self.encode(x)
        dtA, dB = self.discrete()
        h = torch.exp(dtA).flatten() * h + (dB * u.unsqueeze(-1)).flatten(-2)
        return self.readout(h, u), h, {}


LAYERS = {
    "mingru": MinGRULayer,
    "minlstm": MinLSTMLayer,
    "indrnn": IndRNNLayer,
    "lru": LRULayer,
    "s4d": S4DLayer,
}
BOUND_MODES = ("clamp", "tanh")


def check_cell_options(cell: str, options: dict) -> dict:
    """The options ``cell`` reads (ValueError for an impossible value); the others are ignored."""
    if cell not in LAYERS:
        raise ValueError(f"model.cell must be one of {sorted(LAYERS)}, got {cell!r}")
    chunk = require("model.scan_chunk", options["scan_chunk"], integer(1))
    if cell in ("mingru", "minlstm"):
        kept = {"chunk": chunk}
        if cell == "minlstm":
            kept["forget_bias"] = require(
                "model.forget_bias", options["forget_bias"], number(null=True)
            )
        return kept
    if cell == "indrnn":
        _positive("recurrent_bound", options["recurrent_bound"])
        if options["bound_mode"] not in BOUND_MODES:
            raise ValueError(
                f"model.bound_mode must be clamp or tanh, got {options['bound_mode']!r}"
            )
        return {"recurrent_bound": options["recurrent_bound"], "bound_mode": options["bound_mode"]}
    state_size = require("model.state_size", options["state_size"], integer(1))
    if cell == "lru":
        r_min, r_max = options["r_min"], options["r_max"]
        for name, r in (("r_min", r_min), ("r_max", r_max)):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
                raise ValueError(f"model.{name} must be in [0, 1), got {r!r}")
        if r_min > r_max:
            raise ValueError(f"model.r_min must not exceed model.r_max={r_max}, got {r_min}")
        _positive("max_phase", options["max_phase"])
        return {
            "state_size": state_size,
            "r_min": float(r_min),
            "r_max": float(r_max),
            "max_phase": float(options["max_phase"]),
        }
    dt_min, dt_max = options["dt_min"], options["dt_max"]
    _positive("dt_min", dt_min)
    _positive("dt_max", dt_max)
    if dt_min > dt_max:
        raise ValueError(f"model.dt_min must not exceed model.dt_max={dt_max}, got {dt_min}")
    return {"state_size": state_size, "dt_min": float(dt_min), "dt_max": float(dt_max)}


class ModernStack(nn.Module):
    """``num_layers`` layers of one kind, batch-first; called like a fused ``nn.GRU``.

    ``stack(input, hx, lengths) -> (output, h_n)``: ``output`` (batch, seq, hidden) is the top
    layer's, zero at padded steps; ``h_n`` (layers, batch, state_width) is each layer's state at
    each sequence's last valid step (complex for LRU and S4D). ``scan="loop"`` runs every layer
    step by step instead of the parallel scan: the reference the scan is tested against.
    """

    carries_state = True  # generation feeds h_n back in, one step at a time
    batch_first = True
    bidirectional = False

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        scan: str = "parallel",
        **options,
    ) -> None:
        super().__init__()
        if scan not in SCANS:
            raise ValueError(f"model.scan must be parallel or loop, got {scan!r}")
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = float(dropout)
        self.scan = scan
        self.layers = nn.ModuleList(
            LAYERS[cell](input_size if i == 0 else hidden_size, hidden_size, **options)
            for i in range(num_layers)
        )

    def extra_repr(self) -> str:
        return f"{self.cell}, num_layers={self.num_layers}, scan={self.scan}"

    def _between(self, layer: int, y: torch.Tensor) -> torch.Tensor:
        if layer < self.num_layers - 1 and self.dropout > 0 and self.training:
            return F.dropout(y, self.dropout, training=True)
        return y

    def forward(
        self,
        input: torch.Tensor,
        hx: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        scan: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if input.dim() != 3:
            raise ValueError(f"expected a 3-D input (batch, seq, features), got {input.dim()}-D")
        if (scan or self.scan) == "loop":
            return self._loop(input, hx, lengths)
        valid = None
        if lengths is not None:
            steps = torch.arange(input.shape[1], device=input.device)
            valid = (steps < lengths.to(input.device).unsqueeze(1)).unsqueeze(-1)  # (b, s, 1)
        y, finals = input, []
        for i, layer in enumerate(self.layers):
            y, h_last = layer(y, None if hx is None else hx[i], lengths)
            finals.append(h_last)
            if valid is not None:
                y = y * valid
            y = self._between(i, y)
        return y, torch.stack(finals)

    def _loop(self, input, hx, lengths):
        batch, seq_len, _ = input.shape
        states = [
            layer.zero_state(batch, input) if hx is None else hx[i]
            for i, layer in enumerate(self.layers)
        ]
        valid = None
        if lengths is not None:
            valid = (
                torch.arange(seq_len, device=input.device).unsqueeze(1) < lengths.to(input.device)
            ).unsqueeze(-1)  # (seq, batch, 1)
        outputs = []
        for t, y in enumerate(input.unbind(1)):
            for i, layer in enumerate(self.layers):
                y, h, _ = layer.step(y, states[i])
                states[i] = h if valid is None else torch.where(valid[t], h, states[i])
                if valid is not None:
                    y = y * valid[t]
                y = self._between(i, y)
            outputs.append(y)
        return torch.stack(outputs, dim=1), torch.stack(states)


class ModernNet(nn.Module):
    """An encoder (features or token embedding), a ``ModernStack`` and a linear head.

    ``output_mode="last"`` reads the last *valid* step of each sequence (per ``lengths``),
    ``output_mode="sequence"`` every step. Options a cell does not read are ignored.
    """

    num_directions = 1

    def __init__(
        self,
        output_size: int,
        cell: str = "mingru",
        input_size: int | None = None,
        vocab_size: int | None = None,
        embedding_dim: int = 32,
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        output_mode: str = "last",
        scan: str = "parallel",
        scan_chunk: int = 256,
        forget_bias: float | None = None,
        recurrent_bound: float = 1.0,
        bound_mode: str = "clamp",
        state_size: int = 64,
        r_min: float = 0.0,
        r_max: float = 0.99,
        max_phase: float = 2 * math.pi,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
    ) -> None:
        super().__init__()
        check_dims(
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout,
            output_size=output_size,
            output_mode=output_mode,
        )
        options = check_cell_options(cell, dict(locals()))
        self.cell = cell
        self.output_mode = output_mode
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.encoder = InputEncoder(
            input_size=input_size, vocab_size=vocab_size, embedding_dim=embedding_dim
        )
        self.rnn = ModernStack(
            cell,
            self.encoder.output_size,
            hidden_size,
            num_layers,
            dropout if num_layers > 1 else 0.0,
            scan=scan,
            **options,
        )
        self.head = nn.Linear(hidden_size, output_size)

    def features(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every step's output (batch, seq, hidden) and each layer's state at the last valid step."""
        return self.rnn(self.encoder(x), lengths=lengths)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        out, _ = self.features(x, lengths)
        return self.readout(out, lengths)

    def readout(self, out: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The head over every step (batch, seq, output) or the last valid one (batch, output)."""
        if self.output_mode == "sequence":
            return self.head(out)
        return self.head(last_valid_step(out, lengths))

    carries_state = True  # ``carry`` continues a text from a state

    def carry(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The head at every step of ``x`` read on from ``state`` (None: zeros), and the state
        after its last step, (layers, batch, state_width) (complex for LRU and S4D)."""
        out, state = self.rnn(self.encoder(x), state)  # (batch, seq, hidden)
        return self.head(out), state  # (batch, seq, output)

    def trace(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """The step-by-step replay (``rnnlab.nets.replay.Trace``): every state a graph node.

        ``hidden[layer][t]`` is the layer's state after step t (a complex state as its real and
        imaginary parts side by side); ``gates`` holds minGRU's ``z`` and minLSTM's ``f``, ``i``.
        """
        from rnnlab.nets.replay import Trace

        layer_input = self.encoder(x)
        batch, seq_len, _ = layer_input.shape
        hidden, gates = [], []
        for i, layer in enumerate(self.rnn.layers):
            real = layer.to_real(layer.zero_state(batch, layer_input))
            states, outputs, recorded = [], [], {}
            for x_t in layer_input.unbind(1):
                _, h, step_gates = layer.step(x_t, layer.from_real(real))
                real = layer.to_real(h)  # the graph node: the step's output reads it
                states.append(real)
                outputs.append(layer.emit(layer.from_real(real), x_t))
                for name, value in step_gates.items():
                    recorded.setdefault(name, []).append(value.detach())
            hidden.append(states)
            gates.append({name: torch.stack(v, dim=1) for name, v in recorded.items()})
            layer_input = self.rnn._between(i, torch.stack(outputs, dim=1))
        return Trace(
            output=self.readout(layer_input, lengths),
            hidden=hidden,
            step_outputs=self.head(layer_input).detach(),
            gates=gates,
        )
