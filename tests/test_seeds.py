"""The source notebooks' printed numbers, reproduced with rnnlab, and cell stacks equal to fused layers."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from hydra.utils import instantiate
from notebooks.printed import (
    SEED_002_PARAMS,
    SEED_004_DATASET,
    SEEDS,
    Seed001Net,
    SeedCheck,
    hand_chain,
    like_printed,
    seed_001_net,
)
from torch import nn

from rnnlab.nets import CellStack, NumpyRNN, RecurrentNet, UnrolledNet, rnn_forward

FUSED = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


# ------------------------------------------------------------------ seed 000: the NumPy demo loop


def seed_000_reference() -> NumpyRNN:
    return NumpyRNN(
        w_cell_state=np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]),
        b_cell=np.array([0.1, -0.1]),
        w_output=np.array([1.0, 2.0]),
        b_output=0.1,
    )


SEED_000_STATES = ["[0.53704957 0.46211716]", "[0.85973818 0.88366641]"]
SEED_000_OUTPUTS = [1.561283881518055, 2.727071008233731]


@pytest.mark.parametrize("t", [0, 1])
def test_seed000_numpy_reference_prints_the_notebook_state(t):
    states, _ = seed_000_reference().run([1, 2])
    assert np.array2string(states[t], precision=8) == SEED_000_STATES[t]


@pytest.mark.parametrize("t", [0, 1])
def test_seed000_numpy_reference_prints_the_notebook_output(t):
    _, outputs = seed_000_reference().run([1, 2])
    assert f"{float(outputs[t]):.15f}" == repr(SEED_000_OUTPUTS[t])
    assert float(outputs[t]) == pytest.approx(SEED_000_OUTPUTS[t], abs=1e-15)


def test_seed000_the_same_weights_in_an_rnn_cell_give_the_same_numbers():
    cell, head = seed_000_reference().to_rnn_cell()
    assert cell.weight_hh.tolist() == [[0.1, 0.3], [0.2, 0.4]]  # the state rows, transposed
    assert cell.weight_ih.tolist() == [[0.5], [0.6]]  # the appended input's row
    h = torch.zeros(1, 2, dtype=torch.float64)
    with torch.no_grad():
        for t, x in enumerate([1.0, 2.0]):
            h = cell(torch.tensor([[x]], dtype=torch.float64), h)
            assert np.array2string(h[0].numpy(), precision=8) == SEED_000_STATES[t]
            assert head(h).item() == pytest.approx(SEED_000_OUTPUTS[t], abs=1e-14)


@pytest.mark.parametrize("unrolled", [False, True], ids=["model=rnn", "model=rnn_cell"])
def test_seed000_rnnlab_nets_with_the_seed_weights_give_the_same_outputs(unrolled):
    net = seed_000_reference().to_net(unrolled=unrolled)
    assert isinstance(net, UnrolledNet) == unrolled
    x = torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)  # (batch, seq, input)
    with torch.no_grad():
        out = net(x)
        states, _ = net.features(x)
    assert out.shape == (1, 2, 1)
    assert out.flatten().tolist() == pytest.approx(SEED_000_OUTPUTS, abs=1e-14)
    for t in range(2):
        assert np.array2string(states[0, t].numpy(), precision=8) == SEED_000_STATES[t]


@pytest.mark.parametrize("net_class", [RecurrentNet, UnrolledNet])
def test_seed000_parameter_shapes_of_a_two_layer_rnn(net_class):
    net = net_class(output_size=1, cell="rnn", input_size=10, hidden_size=20, num_layers=2)
    fused = net.rnn if net_class is RecurrentNet else net.rnn.to_fused()
    assert (fused.weight_ih_l0.shape, fused.weight_hh_l0.shape, fused.bias_hh_l0.shape) == (
        torch.Size([20, 10]),
        torch.Size([20, 20]),
        torch.Size([20]),
    )
    assert (fused.weight_ih_l1.shape, fused.weight_hh_l1.shape, fused.bias_hh_l1.shape) == (
        torch.Size([20, 20]),
        torch.Size([20, 20]),
        torch.Size([20]),
    )


def test_seed000_output_and_h_n_shapes_seq_first():
    stack = CellStack("rnn", input_size=10, hidden_size=20, num_layers=2)
    with torch.no_grad():
        output, h_n = stack(torch.randn(100, 32, 10), torch.randn(2, 32, 20))
    assert (output.shape, h_n.shape) == (torch.Size([100, 32, 20]), torch.Size([2, 32, 20]))


# ------------------------------------------------------------------ seed 001: per-step head, N(0, 0.001)


def test_seed001_output_and_hidden_shapes():
    net = seed_001_net(seed=0)
    x = torch.ones(5, 3, 4)  # (batch 5, seq 3, input 4)
    with torch.no_grad():
        out = net(x)
        _, hidden = net.features(x)
    assert out.shape == (5, 3, 1)
    assert out.transpose(0, 1).reshape(1, -1, 1).shape == torch.Size([1, 15, 1])
    assert hidden.shape == torch.Size([2, 5, 2])


def test_seed001_config_init_normal_is_the_notebook_scheme(cfg_factory):
    cfg = cfg_factory(
        "model=rnn",
        "model.hidden_size=2",
        "model.num_layers=2",
        "model.init=normal",
        "model.init_std=0.001",
    )
    torch.manual_seed(0)
    ours = instantiate(cfg.model, output_size=1, input_size=4, output_mode="sequence")
    torch.manual_seed(0)
    theirs = Seed001Net(input_size=4, hidden_size=2, num_layers=2, num_classes=1)
    # every recurrent parameter, biases included, is the same N(0, 0.001) draw; the head too
    for (name, p), q in zip(ours.rnn.named_parameters(), theirs.rnn.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert ours.rnn.bias_hh_l1.abs().max().item() < 0.005
    assert torch.equal(ours.head.weight, theirs.linear.weight)
    with torch.no_grad():
        out = ours(torch.ones(5, 3, 4))
        their_out, _ = theirs(torch.ones(3, 5, 4))
    assert their_out.shape == torch.Size([1, 15, 1])
    assert torch.allclose(out.transpose(0, 1).reshape(1, -1, 1), their_out, atol=1e-6)


# ------------------------------------------------------------------ seed 002: 3-layer relu RNN


def seed_002_run() -> tuple[RecurrentNet, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = RecurrentNet(
        output_size=1, cell="rnn", input_size=1, hidden_size=1, num_layers=3, nonlinearity="relu"
    )
    data = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1)  # (batch, seq, input)
    with torch.no_grad():
        output, hn = net.features(data)
    return net, data, output, hn


@pytest.mark.parametrize(("name", "printed"), SEED_002_PARAMS.items())
def test_seed002_manual_seed_0_draws_the_printed_parameter(name, printed):
    net, *_ = seed_002_run()
    param = getattr(net.rnn, name)
    assert param.shape == ((1, 1) if name.startswith("weight") else (1,))
    assert f"{param.item():.4f}" == printed


def test_seed002_hn_and_output():
    _, _, output, hn = seed_002_run()
    assert hn.shape == (3, 1, 1)
    assert [f"{v:.4f}" for v in hn.flatten().tolist()] == ["0.0000", "1.0360", "0.0000"]
    assert output.flatten().tolist() == [0.0, 0.0, 0.0]


def test_seed002_the_step_by_step_formula_reproduces_nn_rnn():
    net, data, output, hn = seed_002_run()
    params = {k: v.detach().double().numpy() for k, v in net.rnn.named_parameters()}
    x = data.transpose(0, 1).double().numpy()  # (seq, batch, input)
    np_output, np_hn = rnn_forward(params, x, nonlinearity="relu")
    assert np.abs(np_output[:, 0] - output[0].double().numpy()).max() <= 1e-6
    assert np.abs(np_hn - hn.double().numpy()).max() <= 1e-6
    cells = UnrolledNet(
        output_size=1, cell="rnn", input_size=1, hidden_size=1, num_layers=3, nonlinearity="relu"
    ).load_recurrent_(net)
    with torch.no_grad():
        cell_output, cell_hn = cells.features(data)
    assert torch.allclose(cell_output, output, atol=1e-6)
    assert torch.allclose(cell_hn, hn, atol=1e-6)


def test_seed002_correct_stacking_reads_the_layer_below_at_the_same_step():
    """Layer 0 stays at 0 for all three steps, so layer 1 runs on its biases alone:
    h^1_t = relu(W_hh^1 h^1_{t-1} + b_ih^1 + b_hh^1) = 0.7731, 0.9804, 1.0360; layer 2 stays 0."""
    net, data, _, hn = seed_002_run()
    p = {k: v.item() for k, v in net.rnn.named_parameters()}
    layer0 = []
    h = 0.0
    for x in (1.0, 2.0, 3.0):
        h = max(
            p["weight_ih_l0"] * x + p["bias_ih_l0"] + p["weight_hh_l0"] * h + p["bias_hh_l0"], 0
        )
        layer0.append(h)
    layer1 = []
    h = 0.0
    for below in layer0:  # layer 1 at step t reads layer 0's output at the same step t
        h = max(
            p["weight_ih_l1"] * below + p["bias_ih_l1"] + p["weight_hh_l1"] * h + p["bias_hh_l1"], 0
        )
        layer1.append(h)
    assert layer0 == [0.0, 0.0, 0.0]
    assert [f"{v:.4f}" for v in layer1] == ["0.7731", "0.9804", "1.0360"]
    assert layer1[-1] == pytest.approx(hn[1].item(), abs=1e-6)


def test_seed002_the_notebooks_hand_chain_is_a_different_computation():
    """The notebook feeds x_t to layer t-1 and passes states up the stack as h_{t-1}."""
    net, _, _, hn = seed_002_run()
    printed = {k: float(v) for k, v in SEED_002_PARAMS.items()}
    lines = hand_chain({**printed, "bias_hh_l0": -0.7356}, [1.0, 2.0, 3.0])
    assert [round(z, 4) for z, _ in lines] == [-1.5661, 0.0027, -0.7642]
    assert [h for _, h in lines] == [0.0, pytest.approx(0.0027), 0.0]
    assert f"{lines[1][1]:.4f}" == "0.0027" != f"{hn[1].item():.4f}" == "1.0360"


# ------------------------------------------------------------------ seed 003: RNNCell/LSTMCell 5 -> 7


def test_seed003_rnn_cell_and_its_weight_shapes():
    cell = CellStack("rnn", input_size=5, hidden_size=7).cells[0]
    assert repr(cell) == "RNNCell(5, 7)"
    assert (cell.weight_ih.shape, cell.weight_hh.shape) == ((7, 5), (7, 7))
    assert cell(torch.rand(1, 5), torch.randn(1, 7)).shape == (1, 7)


def test_seed003_rnn_output_and_hidden_shapes():
    with torch.no_grad():
        output, hidden_1 = CellStack("rnn", 5, 7)(torch.rand(3, 2, 5), torch.randn(1, 2, 7))
    assert (output.size(), hidden_1.size()) == (torch.Size([3, 2, 7]), torch.Size([1, 2, 7]))


def test_seed003_lstm_shapes():
    lstm = CellStack("lstm", input_size=5, hidden_size=7)
    h, c = lstm.cells[0](torch.rand(1, 5), (torch.randn(1, 7), torch.randn(1, 7)))
    assert (h.shape, c.shape) == ((1, 7), (1, 7))
    with torch.no_grad():
        output, (h_1, c_1) = lstm(torch.rand(3, 2, 5), (torch.randn(1, 2, 7), torch.randn(1, 2, 7)))
    assert output.size() == torch.Size([3, 2, 7])
    assert h_1.size() == c_1.size() == torch.Size([1, 2, 7])


# ------------------------------------------------------------------ seed 004: RNNCell loop vs nn.RNN


def test_seed004_rnn_cell_loop_on_the_printed_dataset_equals_nn_rnn():
    dataset = torch.tensor(SEED_004_DATASET)  # (seq 3, batch 1, input 4)
    torch.manual_seed(0)
    cell = nn.RNNCell(input_size=4, hidden_size=2)
    stack = CellStack("rnn", input_size=4, hidden_size=2)
    stack.cells[0].load_state_dict(cell.state_dict())  # the notebook's cell, stacked once
    fused = stack.copy_to_(nn.RNN(input_size=4, hidden_size=2, num_layers=1))
    hidden = torch.zeros(1, 2)
    with torch.no_grad():
        steps = []
        for inputs in dataset:
            assert inputs.shape == torch.Size([1, 4])
            hidden = cell(inputs, hidden)
            assert hidden.shape == torch.Size([1, 2])
            steps.append(hidden)
        out2, hidden2 = fused(dataset, torch.zeros(1, 1, 2))
        cell_out, cell_hidden = stack(dataset, torch.zeros(1, 1, 2))
    assert out2.shape == torch.Size([3, 1, 2]) and hidden2.shape == torch.Size([1, 1, 2])
    assert torch.allclose(torch.stack(steps), out2, atol=1e-6)
    assert torch.allclose(cell_out, out2, atol=1e-6) and torch.allclose(
        cell_hidden, hidden2, atol=1e-6
    )
    assert torch.equal(out2[-1], hidden2[0])  # the notebook's Output2[-1] == Hidden2

    batch_first = CellStack.from_fused(nn.RNN(4, 2, batch_first=True))
    with torch.no_grad():
        out3, hidden3 = batch_first(dataset.transpose(0, 1), torch.zeros(1, 1, 2))
    assert out3.shape == torch.Size([1, 3, 2]) and hidden3.shape == torch.Size([1, 1, 2])


# ------------------------------------------------------------------ the seeds script


def test_like_printed_writes_values_to_the_printed_digits():
    assert (
        like_printed("[0.0000, 1.0360, 0.0000]", [-1e-9, 1.03597, 0.0])
        == "[0.0000, 1.0360, 0.0000]"
    )
    assert like_printed("[0., 0., 0.]", [0.0, 0.0, 0.0]) == "[0., 0., 0.]"
    assert like_printed("1.561283881518055", 1.5612838815180548) == "1.561283881518055"
    assert like_printed("-0.0075", -0.00751) == "-0.0075"


def test_seeds_script_exits_zero_and_names_a_differing_row(capsys, monkeypatch):
    result = run_cli([], script="scripts/seeds.py", timeout=300)
    assert result.returncode == 0, result.stderr
    for key in SEEDS:
        assert f"seed {key}_" in result.stdout
    assert re.search(
        r"output_1 \(NumpyRNN\)\s+2\.727071008233731\s+2\.727071008233731\s+ok", result.stdout
    )
    assert re.search(
        r"hn \(layers 0, 1, 2\)\s+(\[0\.0000, 1\.0360, 0\.0000\]\s+){2}ok", result.stdout
    )
    assert "DIFFERS" not in result.stdout
    assert result.stdout.rstrip().endswith("Every row agrees.")

    spec = importlib.util.spec_from_file_location("seeds_script", ROOT / "scripts" / "seeds.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def wrong() -> SeedCheck:
        check = SeedCheck("999_test", "a row that differs")
        check.number("hn", "1.0360", 1.0361)
        return check

    monkeypatch.setitem(SEEDS, "999", wrong)
    assert script.main(["999"]) == 1
    assert "999_test: hn" in capsys.readouterr().err
    assert script.main(["12"]) == 2
