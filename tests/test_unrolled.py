"""Cell-by-cell nets (CellStack, UnrolledNet) equal the fused nn.RNN/LSTM/GRU they mirror."""

from __future__ import annotations

import pytest
import torch
from conftest import QUIET
from torch import nn

from rnnlab.nets import CellStack, RecurrentNet, UnrolledNet
from rnnlab.train import train

FUSED = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def name_in_stack(fused_name: str) -> str:
    kind, layer = fused_name.rsplit("_l", 1)
    return f"cells.{layer}.{kind}"


@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-state", "h0"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq-first", "batch-first"])
@pytest.mark.parametrize("mode", ["rnn", "lstm", "gru"])
def test_cell_stack_equals_the_fused_layer_forward_and_gradients(
    mode, batch_first, num_layers, with_h0
):
    torch.manual_seed(0)
    # float64, so that 1e-6 measures the computation and not float32 rounding of large gradients
    fused = FUSED[mode](3, 5, num_layers, batch_first=batch_first).double()
    stack = CellStack.from_fused(fused)
    assert stack.cells[0].weight_ih.dtype == torch.float64
    x = torch.randn((2, 4, 3) if batch_first else (4, 2, 3), dtype=torch.float64)
    hx = None
    if with_h0:
        h0 = torch.randn(num_layers, 2, 5, dtype=torch.float64)
        hx = (h0, torch.randn_like(h0)) if mode == "lstm" else h0
    x_fused, x_cells = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_f, state_f = fused(x_fused, hx)
    out_c, state_c = stack(x_cells, hx)
    states_f = state_f if mode == "lstm" else (state_f,)
    states_c = state_c if mode == "lstm" else (state_c,)
    assert out_c.shape == out_f.shape == ((2, 4, 5) if batch_first else (4, 2, 5))
    assert (out_c - out_f).abs().max().item() <= 1e-6
    for a, b in zip(states_c, states_f, strict=True):
        assert a.shape == (num_layers, 2, 5)
        assert (a - b).abs().max().item() <= 1e-6

    loss = lambda out, states: out.pow(2).sum() + sum(s.sin().sum() for s in states)  # noqa: E731
    loss(out_f, states_f).backward()
    loss(out_c, states_c).backward()
    assert (x_cells.grad - x_fused.grad).abs().max().item() <= 1e-6
    for name, p in fused.named_parameters():
        g = dict(stack.named_parameters())[name_in_stack(name)].grad
        assert (g - p.grad).abs().max().item() <= 1e-6, name
    assert set(stack.fused_state_dict()) == {n for n, _ in fused.named_parameters()}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_unrolled_net_draws_the_same_weights_as_the_fused_net_and_copies_both_ways(cell):
    kwargs = dict(output_size=3, cell=cell, vocab_size=9, hidden_size=6, num_layers=2)
    torch.manual_seed(1)
    fused = RecurrentNet(**kwargs)
    torch.manual_seed(1)
    cells = UnrolledNet(**kwargs)
    assert [p.tolist() for p in fused.parameters()] == [p.tolist() for p in cells.parameters()]
    x = torch.randint(1, 9, (4, 7))
    lengths = torch.tensor([7, 2, 5, 1])
    with torch.no_grad():
        assert torch.allclose(fused(x, lengths), cells(x, lengths), atol=1e-6)
    torch.manual_seed(2)
    other = RecurrentNet(**kwargs)
    cells.load_recurrent_(other)
    back = cells.to_recurrent()
    with torch.no_grad():
        assert torch.allclose(cells(x, lengths), other(x, lengths), atol=1e-6)
        assert torch.allclose(back(x, lengths), other(x, lengths), atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_step_by_step_replay_reads_a_cell_net_like_its_fused_twin(cell):
    from rnnlab.nets.replay import trace

    kwargs = dict(output_size=2, cell=cell, input_size=3, hidden_size=4, num_layers=2)
    torch.manual_seed(0)
    fused = RecurrentNet(**kwargs)
    torch.manual_seed(0)
    cells = UnrolledNet(**kwargs)
    assert cells.rnn.weight_hh_l1 is cells.rnn.cells[1].weight_hh  # the fused names read the cells
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 3])
    ours, theirs = trace(cells, x, lengths), trace(fused, x, lengths)
    with torch.no_grad():
        assert torch.allclose(ours.output, cells(x, lengths), atol=1e-6)
    assert torch.allclose(ours.output, theirs.output, atol=1e-6)
    for layer in range(2):
        assert torch.allclose(ours.hidden_sequence(layer), theirs.hidden_sequence(layer), atol=1e-6)
        assert ours.gates[layer].keys() == theirs.gates[layer].keys()


@pytest.mark.parametrize("mode", ["rnn", "lstm", "gru"])
def test_with_lengths_the_final_state_is_the_packed_fused_state(mode):
    torch.manual_seed(0)
    fused = FUSED[mode](3, 4, 2, batch_first=True)
    stack = CellStack.from_fused(fused)
    x = torch.randn(3, 6, 3)
    lengths = torch.tensor([6, 2, 4])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        out_f, state_f = fused(packed)
        out_f, _ = nn.utils.rnn.pad_packed_sequence(out_f, batch_first=True, total_length=6)
        out_c, state_c = stack(x, lengths=lengths)
    assert torch.allclose(out_c, out_f, atol=1e-6)  # zeros past each sequence's end
    for a, b in zip(*((s if mode == "lstm" else (s,)) for s in (state_c, state_f)), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_dropout_between_cells_acts_only_in_training():
    torch.manual_seed(0)
    stack = CellStack("gru", 3, 8, num_layers=2, dropout=0.5)
    fused = stack.to_fused()
    assert fused.dropout == 0.5
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        assert torch.allclose(stack.eval()(x)[0], fused.eval()(x)[0], atol=1e-6)
        assert not torch.allclose(stack.train()(x)[0], stack.eval()(x)[0], atol=1e-3)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: UnrolledNet(2, "lstm", input_size=3, bidirectional=True),
            "not available for cell-by-cell",
        ),
        (lambda: CellStack("transformer", 3, 4), "model.cell must be one of"),
        (lambda: CellStack("gru", 3, 4, nonlinearity="relu"), "only applies to cell 'rnn'"),
        (lambda: CellStack.from_fused(nn.LSTM(3, 4, bidirectional=True)), "only unidirectional"),
        (
            lambda: UnrolledNet(2, "rnn", input_size=3, hidden_size=0),
            "model.hidden_size must be a positive integer, got 0",
        ),
    ],
)
def test_impossible_cell_nets_say_why(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("cell_model", "fused_model", "data"),
    [
        ("lstm_cell", "lstm", ["data=pattern", "data.min_len=4"]),  # variable lengths
        ("gru_cell", "gru", ["data=counting"]),  # a head at every step
        ("rnn_cell", "rnn", ["data=parity", "model.num_layers=2"]),
    ],
)
def test_cell_models_train_exactly_like_their_fused_twins(
    cfg_factory, cell_model, fused_model, data
):
    common = [
        *data,
        "data.n_train=128",
        "data.n_val=64",
        "data.n_test=64",
        "model.hidden_size=8",
        "trainer.max_epochs=1",
        "logger=none",
        "callbacks=none",
        *QUIET,
    ]
    fused = train(cfg_factory(f"model={fused_model}", *common, subdir="fused"))
    cells = train(cfg_factory(f"model={cell_model}", *common, subdir="cells"))
    assert "test/loss" in cells
    for key, value in fused.items():
        assert cells[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
