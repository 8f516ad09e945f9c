"""Parallel scans for linear recurrences ``h_t = a_t * h_{t-1} + b_t`` over the time axis.

All tensors are batch-first: ``(batch, seq, features)``; ``h0`` is ``(batch, features)`` or None
(zeros). Each scan returns every step's state, ``(batch, seq, features)``, and is exact against
``sequential_scan``, the plain step-by-step loop, up to floating-point rounding.

- ``log_space_scan``: positive ``a`` and ``b`` given by their logarithms (the minGRU/minLSTM case).
  ``h_t = exp(A_t) * (h0 + sum_{k<=t} exp(log b_k - A_k))`` with ``A_t = sum_{j<=t} log a_j``,
  the sum done by ``torch.logcumsumexp`` so that nothing overflows. The sequence is cut into
  chunks of ``chunk`` steps, the state carried from one chunk to the next, so that ``A_t`` stays
  small and float32 keeps its precision on long sequences.
- ``diagonal_scan``: a time-invariant diagonal ``a = exp(log_a)`` (real or complex, the LRU and
  S4D case) with any ``b``: the recurrence is then a causal convolution with the kernel
  ``a^0, a^1, ...``, done by FFT; only powers ``a^d`` with ``d >= 0`` appear (no division, no
  logarithm of ``b``).
"""

from __future__ import annotations

import torch


def sequential_scan(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None
) -> torch.Tensor:
    """The reference loop: ``h_t = a_t * h_{t-1} + b_t``; ``a`` is (batch, seq, n) or (n,)."""
    h = b.new_zeros(b.shape[0], b.shape[2]) if h0 is None else h0
    states = []
    for t in range(b.shape[1]):
        a_t = a if a.dim() == 1 else a[:, t]
        h = a_t * h + b[:, t]
        states.append(h)
    return torch.stack(states, dim=1)


def log_space_scan(
    log_a: torch.Tensor,
    log_b: torch.Tensor,
    h0: torch.Tensor | None = None,
    chunk: int = 256,
) -> torch.Tensor:
    """``h_t = a_t * h_{t-1} + b_t`` from ``log a_t`` and ``log b_t`` (batch, seq, n).

    ``a`` and ``b`` must be positive (their logarithms real); ``h0`` may have any sign.
    """
    if chunk < 1:
        raise ValueError(f"the scan chunk must be a positive number of steps, got {chunk!r}")
    seq_len = log_b.shape[1]
    states = []
    h = h0
    for start in range(0, seq_len, chunk):
        la = log_a[:, start : start + chunk]
        lb = log_b[:, start : start + chunk]
        a_star = torch.cumsum(la, dim=1)  # A_t: the log of the product of a over the chunk
        part = torch.exp(a_star + torch.logcumsumexp(lb - a_star, dim=1))
        if h is not None:
            part = part + torch.exp(a_star) * h.unsqueeze(1)
        states.append(part)
        h = part[:, -1]
    return states[0] if len(states) == 1 else torch.cat(states, dim=1)


def causal_conv(kernel: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``y_t = sum_{k<=t} kernel_{t-k} * b_k`` along the time axis by FFT.

    ``kernel`` is (seq, n), ``b`` (batch, seq, n); either may be complex (then so is ``y``).
    """
    seq_len = b.shape[1]
    size = 1 << (2 * seq_len - 1).bit_length()  # no wrap-around, a fast length
    if kernel.is_complex() or b.is_complex():
        spectrum = torch.fft.fft(b, n=size, dim=1) * torch.fft.fft(kernel, n=size, dim=0)
        return torch.fft.ifft(spectrum, n=size, dim=1)[:, :seq_len]
    spectrum = torch.fft.rfft(b, n=size, dim=1) * torch.fft.rfft(kernel, n=size, dim=0)
    return torch.fft.irfft(spectrum, n=size, dim=1)[:, :seq_len]


def powers(log_a: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``a^d = exp(d * log_a)`` for ``d = start .. stop - 1``: (stop - start, n)."""
    d = torch.arange(start, stop, device=log_a.device, dtype=log_a.real.dtype)
    return torch.exp(d.unsqueeze(-1) * log_a)


def diagonal_scan(
    log_a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None
) -> torch.Tensor:
    """``h_t = a * h_{t-1} + b_t`` with one ``a = exp(log_a)`` per feature, (n,), for every step.

    A time-invariant diagonal recurrence is a convolution, ``h_t = sum_{k<=t} a^(t-k) b_k +
    a^(t+1) h0``: computed by FFT in ``O(T log T)``, every step at once. ``log_a`` and ``b``
    may be complex; only powers ``a^d`` with ``d >= 0`` appear, so nothing overflows.
    """
    seq_len = b.shape[1]
    h = causal_conv(powers(log_a, 0, seq_len), b)
    if h0 is not None:
        h = h + powers(log_a, 1, seq_len + 1) * h0.unsqueeze(1)
    return h
