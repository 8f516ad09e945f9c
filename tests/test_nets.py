"""Nets: shapes, the last-valid-step head, packing, initialization and impossible sizes."""

from __future__ import annotations

import pytest
import torch

from rnnlab.nets import CharRNN, RecurrentNet, last_valid_step


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_last_valid_step_equals_running_each_sequence_alone(cell):
    torch.manual_seed(0)
    net = RecurrentNet(output_size=3, cell=cell, input_size=4, hidden_size=8, num_layers=2).eval()
    x = torch.randn(3, 7, 4)
    lengths = torch.tensor([7, 3, 5])
    batched = net(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone = net(x[i : i + 1, :n])
        assert torch.allclose(batched[i], alone[0], atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_bidirectional_packed_equals_each_sequence_alone(cell):
    torch.manual_seed(0)
    net = RecurrentNet(
        output_size=2, cell=cell, vocab_size=10, hidden_size=6, bidirectional=True
    ).eval()
    x = torch.randint(1, 10, (3, 6))
    lengths = torch.tensor([6, 2, 4])
    x[1, 2:] = 0
    x[2, 4:] = 0
    batched = net(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(batched[i], net(x[i : i + 1, :n])[0], atol=1e-6)


def test_sequence_head_and_token_ids():
    net = RecurrentNet(
        output_size=5, cell="gru", vocab_size=12, hidden_size=8, output_mode="sequence"
    )
    out = net(torch.randint(0, 12, (4, 9)))
    assert out.shape == (4, 9, 5)


def test_last_valid_step_gathers_the_right_index():
    out = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)
    assert last_valid_step(out, torch.tensor([2, 4])).flatten().tolist() == [1.0, 7.0]


def test_char_rnn_matches_stepping_the_cell_by_hand():
    torch.manual_seed(0)
    net = CharRNN(output_size=3, vocab_size=5, hidden_size=7)
    x = torch.tensor([[1, 2, 3, 4], [4, 3, 0, 0]])
    lengths = torch.tensor([4, 2])
    batched = net(x, lengths)
    assert batched.shape == (2, 3)
    for i, n in enumerate(lengths.tolist()):
        hidden = net.cell.init_hidden(1)
        for t in range(n):
            one_hot = torch.nn.functional.one_hot(x[i : i + 1, t], 5).float()
            output, hidden = net.cell(one_hot, hidden)
        assert torch.allclose(batched[i], output[0], atol=1e-6)
    assert torch.allclose(batched.exp().sum(-1), torch.ones(2), atol=1e-5)  # log-probabilities


def test_normal_init_draws_recurrent_weights_with_the_given_std():
    torch.manual_seed(0)
    net = RecurrentNet(
        output_size=1,
        cell="rnn",
        input_size=4,
        hidden_size=64,
        num_layers=2,
        init="normal",
        init_std=0.001,
    )
    weights = torch.cat([p.flatten() for p in net.rnn.parameters()])
    assert abs(weights.std().item() - 0.001) < 1e-4
    assert net.head.weight.std().item() > 0.01  # the head keeps its default init


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size": 0}, "model.hidden_size must be a positive integer, got 0"),
        ({"num_layers": 0}, "model.num_layers must be a positive integer, got 0"),
        ({"dropout": 1.5}, "model.dropout must be in [0, 1), got 1.5"),
        ({"cell": "transformer"}, "model.cell must be one of"),
        ({"cell": "lstm", "nonlinearity": "relu"}, "only applies to cell 'rnn'"),
    ],
)
def test_impossible_sizes_name_the_key(kwargs, message):
    with pytest.raises(
        ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        RecurrentNet(output_size=2, input_size=3, **kwargs)
