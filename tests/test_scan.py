"""Parallel scans against the step-by-step recurrence: outputs, final states and gradients."""

from __future__ import annotations

import pytest
import torch

from rnnlab.nets import ModernNet
from rnnlab.nets.modern import LAYERS
from rnnlab.nets.scan import diagonal_scan, log_space_scan, sequential_scan
from rnnlab.tasks.lm import sample_ids

CELLS = sorted(LAYERS)
TOL = 1e-5


def small_net(cell: str, dtype=torch.float64, **kwargs) -> ModernNet:
    torch.manual_seed(0)
    options = dict(
        output_size=3, cell=cell, input_size=4, hidden_size=8, num_layers=2, state_size=6
    )
    return ModernNet(**{**options, **kwargs}).to(dtype)


def initial_state(net: ModernNet, batch: int, dtype) -> torch.Tensor:
    layer = net.rnn.layers[0]
    like = torch.zeros(1, dtype=dtype)
    return torch.stack(
        [torch.randn_like(layer.zero_state(batch, like)) for _ in range(net.num_layers)]
    )


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def test_log_space_scan_equals_the_loop_across_chunks_and_with_a_signed_initial_state():
    torch.manual_seed(0)
    log_a = -torch.rand(3, 100, 5, dtype=torch.float64) * 3
    log_b = torch.randn(3, 100, 5, dtype=torch.float64)
    h0 = torch.randn(3, 5, dtype=torch.float64)  # any sign
    want = sequential_scan(log_a.exp(), log_b.exp(), h0)
    for chunk in (1, 7, 64, 256):
        got = log_space_scan(log_a, log_b, h0, chunk=chunk)
        assert (got - want).abs().max().item() < TOL
    with pytest.raises(ValueError, match="chunk must be a positive"):
        log_space_scan(log_a, log_b, chunk=0)


def test_log_space_scan_keeps_float32_precision_on_long_sequences_by_chunks():
    torch.manual_seed(0)
    log_a = torch.nn.functional.logsigmoid(torch.randn(2, 2000, 4) + 2)
    log_b = torch.randn(2, 2000, 4) - 1
    want = sequential_scan(log_a.double().exp(), log_b.double().exp())
    got = log_space_scan(log_a, log_b, chunk=128).double()
    assert ((got - want).abs() / want.abs()).max().item() < 1e-5


def test_diagonal_scan_equals_the_loop_for_complex_decays_and_an_initial_state():
    torch.manual_seed(0)
    log_a = torch.complex(
        -torch.rand(6, dtype=torch.float64), 3 * torch.rand(6, dtype=torch.float64)
    )
    b = torch.randn(2, 45, 6, dtype=torch.complex128)
    h0 = torch.randn(2, 6, dtype=torch.complex128)
    want = sequential_scan(log_a.exp(), b, h0)
    assert (diagonal_scan(log_a, b, h0) - want).abs().max().item() < TOL
    assert (diagonal_scan(log_a, b) - sequential_scan(log_a.exp(), b)).abs().max().item() < TOL


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_scan_equals_the_step_by_step_loop_in_outputs_states_and_gradients(cell, with_state):
    """Padded batch, lengths from 1 to the full length: the state stops at each last valid step."""
    net = small_net(cell)
    torch.manual_seed(1)
    x = torch.randn(4, 40, 4, dtype=torch.float64)
    lengths = torch.tensor([40, 1, 17, 39])
    hx = initial_state(net, 4, torch.float64) if with_state else None
    out_p, h_p = net.rnn(x, hx, lengths=lengths)
    out_l, h_l = net.rnn(x, hx, lengths=lengths, scan="loop")
    assert (out_p - out_l).abs().max().item() < TOL
    assert (h_p - h_l).abs().max().item() < TOL
    assert (out_p[1, 1:] == 0).all()  # padded steps read as zero

    params = list(net.rnn.parameters())

    def grads(out, h):
        loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum()
        loss = loss + (h.abs() ** 2).sum()
        return torch.autograd.grad(loss, params)

    assert max_diff(grads(out_p, h_p), grads(out_l, h_l)) < TOL

    # the final state really is the one at step length - 1: rerun each sequence cut to its length
    for k, length in enumerate(lengths.tolist()):
        h0 = None if hx is None else hx[:, k : k + 1]
        _, h_k = net.rnn(x[k : k + 1, :length], h0, scan="loop")
        assert (h_k[:, 0] - h_p[:, k]).abs().max().item() < TOL


@pytest.mark.parametrize("cell", CELLS)
def test_scan_equals_the_loop_in_float32(cell):
    net = small_net(cell, dtype=torch.float32)
    torch.manual_seed(1)
    x = torch.randn(3, 30, 4)
    out_p, h_p = net.rnn(x)
    out_l, h_l = net.rnn(x, scan="loop")
    assert (out_p - out_l).abs().max().item() < TOL
    assert (h_p - h_l).abs().max().item() < TOL


@pytest.mark.parametrize("cell", CELLS)
def test_stepping_with_the_carried_state_equals_the_full_sequence_pass(cell):
    net = small_net(cell, vocab_size=7, input_size=None, output_mode="sequence")
    net.eval()
    torch.manual_seed(2)
    ids = torch.randint(0, 7, (2, 25))
    full, h_full = net.rnn(net.encoder(ids))
    out, state = net.rnn(net.encoder(ids[:, :5]))  # a prompt, then one step at a time
    steps = [out]
    for t in range(5, 25):
        out, state = net.rnn(net.encoder(ids[:, t : t + 1]), state)
        steps.append(out)
    assert (torch.cat(steps, dim=1) - full).abs().max().item() < TOL
    assert (state - h_full).abs().max().item() < TOL


@pytest.mark.parametrize("cell", CELLS)
def test_generation_carries_the_state_and_matches_rereading_the_text(cell):
    net = small_net(
        cell, dtype=torch.float32, vocab_size=7, input_size=None, output_mode="sequence"
    )
    prompt = [1, 2, 3]
    stepped = sample_ids(net, prompt, 12, temperature=0.0)
    ids = list(prompt)  # greedy continuation from the full-sequence pass, re-read every step
    with torch.no_grad():
        for _ in range(12):
            ids.append(int(net(torch.tensor([ids]))[0, -1].argmax()))
    assert stepped == ids[len(prompt) :]
