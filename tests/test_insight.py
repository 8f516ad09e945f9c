"""Seeing inside the nets: step-by-step replays, gradient flow through time, TensorBoard pictures."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import QUIET
from torch import nn

from rnnlab.callbacks import insight
from rnnlab.errors import RnnlabError
from rnnlab.nets import CharRNN, RecurrentNet, replay
from rnnlab.review import event_dir
from rnnlab.tasks import SequenceClassifier, SequenceRegressor
from rnnlab.train import train

TINY = ["data.n_train=128", "data.n_val=64", "data.n_test=64", "data.batch_size=32"]


def tiny_net(cell: str, num_layers: int = 1, output_mode: str = "last", **kwargs) -> RecurrentNet:
    torch.manual_seed(0)
    net = RecurrentNet(
        output_size=1,
        cell=cell,
        input_size=3,
        hidden_size=5,
        num_layers=num_layers,
        output_mode=output_mode,
        **kwargs,
    )
    return net.double().eval()


def tiny_batch(output_mode: str = "last", batch: int = 4, seq_len: int = 7) -> dict:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, seq_len, 3, generator=g, dtype=torch.float64)
    y_shape = (batch, 1) if output_mode == "last" else (batch, seq_len, 1)
    return {"x": x, "y": torch.randn(*y_shape, generator=g, dtype=torch.float64)}


CELLS = [("rnn", {}), ("rnn", {"nonlinearity": "relu"}), ("lstm", {}), ("gru", {})]


@pytest.mark.parametrize(("cell", "kwargs"), CELLS)
def test_the_replay_reproduces_the_fused_net_at_every_layer_and_step(cell, kwargs):
    net = tiny_net(cell, num_layers=2, **kwargs)
    x = tiny_batch()["x"]
    with torch.no_grad():
        trace = replay.trace(net, x)
        torch.testing.assert_close(trace.output, net(x), rtol=0, atol=1e-10)
        for t in range(x.shape[1]):
            _, state = net.rnn(x[:, : t + 1])  # the fused stack's final state after t + 1 steps
            h_n = state[0] if cell == "lstm" else state
            for layer in range(2):
                torch.testing.assert_close(trace.hidden[layer][t], h_n[layer], rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_replay_reproduces_the_cell_by_cell_nets(cell):
    from rnnlab.nets import UnrolledNet

    torch.manual_seed(0)
    net = UnrolledNet(output_size=2, cell=cell, input_size=3, hidden_size=5, num_layers=2).eval()
    x, lengths = torch.randn(4, 6, 3), torch.tensor([6, 3, 5, 1])
    with torch.no_grad():
        trace = replay.trace(net, x, lengths)
        assert (trace.output - net(x, lengths)).abs().max().item() < 1e-6
        out, _ = net.rnn(net.encoder(x))
        assert (trace.hidden_sequence(1) - out).abs().max().item() < 1e-6


def test_lstm_gate_replay_equals_nn_lstm_in_float32():
    torch.manual_seed(3)
    net = RecurrentNet(output_size=2, cell="lstm", input_size=4, hidden_size=6, num_layers=2).eval()
    x = torch.randn(3, 9, 4)
    with torch.no_grad():
        trace = replay.trace(net, x)
        out, _ = net.rnn(x)
        assert (trace.hidden_sequence(1) - out).abs().max().item() < 1e-6
        for t in range(x.shape[1]):
            _, (h_n, c_n) = net.rnn(x[:, : t + 1])
            for layer in range(2):
                gates = trace.gates[layer]
                assert set(gates) == {"i", "f", "g", "o", "c"}
                assert (gates["c"][:, t] - c_n[layer]).abs().max().item() < 1e-6
                assert (trace.hidden[layer][t] - h_n[layer]).abs().max().item() < 1e-6
                # h_t = o_t * tanh(c_t), with the recorded gates
                h = gates["o"][:, t] * torch.tanh(gates["c"][:, t])
                assert (h - h_n[layer]).abs().max().item() < 1e-6
    assert trace.gates[0]["f"].shape == (3, 9, 6)


def test_gru_replay_records_its_gates():
    net = tiny_net("gru")
    with torch.no_grad():
        trace = replay.trace(net, tiny_batch()["x"])
    assert set(trace.gates[0]) == {"r", "z", "n"}
    assert trace.gates[0]["z"].shape == (4, 7, 5)
    assert 0.0 < trace.gates[0]["z"].min() and trace.gates[0]["z"].max() < 1.0


def injected_gradient_norms(net: RecurrentNet, batch: dict, loss_fn) -> list[float]:
    """``||dL/dh_t||`` by injecting h_t as a leaf state into the fused layer (one-layer nets)."""
    x, norms = batch["x"], []
    for t in range(x.shape[1]):
        prefix, state = net.rnn(x[:, : t + 1])
        if net.cell == "lstm":
            h_t = state[0].detach().requires_grad_()
            state = (h_t, state[1].detach())
        else:
            h_t = state.detach().requires_grad_()
            state = h_t
        suffix, _ = net.rnn(x[:, t + 1 :], state) if t + 1 < x.shape[1] else (prefix[:, :0], None)
        out = torch.cat([prefix[:, :t].detach(), h_t[-1][:, None], suffix], dim=1)
        loss = loss_fn(net.readout(out), batch)
        (grad,) = torch.autograd.grad(loss, h_t)
        norms.append(grad.norm().item())
    return norms


@pytest.mark.parametrize("output_mode", ["last", "sequence"])
@pytest.mark.parametrize(("cell", "kwargs"), CELLS)
def test_gradient_flow_matches_a_direct_autograd_computation(cell, kwargs, output_mode):
    net = tiny_net(cell, output_mode=output_mode, **kwargs)
    batch = tiny_batch(output_mode)
    loss_fn = SequenceRegressor(net).loss
    norms = insight.gradient_flow(net, loss_fn, batch)
    assert len(norms) == 1 and norms[0].shape == (7,)
    expected = injected_gradient_norms(net, batch, loss_fn)
    assert norms[0].tolist() == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert all(p.grad is None for p in net.parameters())  # training's gradients untouched


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gradient_flow_through_two_layers_matches_torch_cells(cell):
    net = tiny_net(cell, num_layers=2)
    batch = tiny_batch()
    loss_fn = SequenceRegressor(net).loss
    norms = insight.gradient_flow(net, loss_fn, batch)

    cell_cls = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell]
    cells = []
    for layer, size in enumerate((3, 5)):
        c = cell_cls(size, 5).double()
        c.load_state_dict(
            {
                name: getattr(net.rnn, f"{name}_l{layer}")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            }
        )
        cells.append(c)
    inputs, states = list(batch["x"].unbind(1)), []
    for c in cells:
        h = torch.zeros(4, 5, dtype=torch.float64)
        state = (h, h.clone()) if cell == "lstm" else h
        outs = []
        for x_t in inputs:
            state = c(x_t, state)
            outs.append(state[0] if cell == "lstm" else state)
        states.append(outs)
        inputs = outs
    loss = loss_fn(net.head(inputs[-1]), batch)
    grads = torch.autograd.grad(loss, [h for layer in states for h in layer])
    expected = torch.stack([g.norm() for g in grads]).view(2, 7)
    torch.testing.assert_close(torch.stack(norms), expected, rtol=1e-6, atol=1e-12)


def test_char_rnn_gradient_flow_is_taken_at_the_state_each_step_reads():
    torch.manual_seed(0)
    net = CharRNN(output_size=3, vocab_size=6, hidden_size=8).double()
    x = torch.randint(1, 6, (4, 5))
    batch = {"x": x, "y": torch.tensor([0, 1, 2, 1])}
    loss_fn = SequenceClassifier(net, num_classes=3).loss
    norms = insight.gradient_flow(net, loss_fn, batch)[0]
    assert norms.shape == (5,)
    for t in range(5):
        _, states = net.unroll(x[:, : t + 1])
        h = states[t].detach().requires_grad_()
        outputs, _ = net.unroll(x[:, t:], hidden=h)
        (grad,) = torch.autograd.grad(loss_fn(outputs[-1], batch), h)
        assert norms[t].item() == pytest.approx(grad.norm().item(), rel=1e-6)


def test_the_ratio_is_first_step_over_last_step():
    assert insight.flow_ratio(torch.tensor([2.0, 1.0, 4.0])) == 0.5
    assert insight.flow_ratio(torch.tensor([1.0, 0.0])) == math.inf
    assert insight.log10_ratio(0.001) == pytest.approx(-3.0)
    assert insight.log10_ratio(0.0) == pytest.approx(-38.0)
    assert insight.log10_ratio(math.inf) == pytest.approx(38.0)  # a chart can still draw it


def test_prediction_changes_follow_the_predicted_class():
    probs = torch.tensor([[0.5, 0.5], [0.2, 0.8], [0.1, 0.9]])
    predicted, p, change = insight.prediction_changes(probs.log())
    assert predicted == 1
    torch.testing.assert_close(p, torch.tensor([0.5, 0.8, 0.9]))
    torch.testing.assert_close(change, torch.tensor([0.0, 0.3, 0.1]))


def test_a_bidirectional_net_is_refused_in_one_sentence():
    net = RecurrentNet(output_size=1, input_size=2, bidirectional=True)
    task = SequenceRegressor(net)
    with pytest.raises(RnnlabError, match=r"^GradientFlow .* needs model.bidirectional=false$"):
        insight.GradientFlow().setup(None, task, "fit")


def test_insight_is_off_by_default_and_each_option_adds_its_callback(cfg_factory):
    names = {"grad_flow", "hidden_states", "param_histograms"}
    assert not names & set(cfg_factory().callbacks)
    assert names <= set(cfg_factory("insight=all").callbacks)
    cfg = cfg_factory("insight=[grad_flow,histograms]", "callbacks.grad_flow.every_n_epochs=3")
    assert {"grad_flow", "param_histograms", "model_checkpoint"} <= set(cfg.callbacks)
    assert "hidden_states" not in cfg.callbacks
    assert cfg.callbacks.grad_flow.every_n_epochs == 3


class Counter:
    """Counts calls to the functions it wraps (monkeypatched in place)."""

    def __init__(self, monkeypatch, targets: list[tuple[object, str]]) -> None:
        self.counts: dict[str, int] = {}
        for owner, name in targets:
            original = getattr(owner, name)
            self.counts[name] = 0

            def wrapped(*args, _original=original, _name=name, **kwargs):
                self.counts[_name] += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(owner, name, wrapped)


def test_with_insight_off_nothing_extra_runs_and_on_it_leaves_training_unchanged(
    cfg_factory, monkeypatch
):
    from torch.utils.tensorboard import SummaryWriter

    counter = Counter(
        monkeypatch,
        [
            (replay, "trace"),
            (SummaryWriter, "add_figure"),
            (SummaryWriter, "add_histogram"),
            (SummaryWriter, "add_histogram_raw"),
            (SummaryWriter, "add_text"),
        ],
    )
    base = ["data=pattern", "trainer.max_epochs=2", *TINY, *QUIET]
    off = train(cfg_factory(*base, subdir="off"))
    assert counter.counts == dict.fromkeys(counter.counts, 0)

    on = train(cfg_factory(*base, "insight=grad_flow", subdir="on"))
    assert counter.counts["trace"] == 2  # once after each epoch
    assert counter.counts["add_figure"] == 2
    assert counter.counts["add_histogram_raw"] == 2
    assert counter.counts["add_histogram"] == counter.counts["add_text"] == 0
    # the fixed batch, the replay and the extra backward leave training exactly as it was
    for key in ("train/loss_epoch", "val/loss", "test/acc"):
        assert on[key] == pytest.approx(off[key], abs=1e-6)
    assert "grad_flow/ratio" in on and "grad_flow/ratio" not in off


def test_the_callbacks_write_images_histograms_and_text_to_tensorboard(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "data=pattern",
        "data.one_hot=false",
        "model.num_layers=2",
        "model.hidden_size=16",
        "insight=all",
        "callbacks.hidden_states.num_sequences=1",
        "callbacks.param_histograms.every_n_steps=2",
        "trainer.max_epochs=1",
        *TINY,
        *QUIET,
    )
    metrics = train(cfg)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    keep_all = {"images": 0, "histograms": 0, "tensors": 0, "scalars": 0}
    events = EventAccumulator(str(event_dir(tmp_path / "run")), size_guidance=keep_all).Reload()
    tags = events.Tags()
    assert {
        "grad_flow/norms",
        "hidden/seq0/layer1",
        "hidden/seq0/layer2",
        "hidden/seq0/prediction",
    } <= set(tags["images"])
    image = events.Images("grad_flow/norms")[0]
    assert (image.width, image.height) == (480, 280)  # 6 x 3.5 inches at 80 dpi
    assert image.encoded_image_string.startswith(b"\x89PNG")
    assert {
        "grad_flow/layer1",
        "grad_flow/layer2",
        "weights/net.rnn.weight_hh_l0",
        "gradients/net.rnn.weight_hh_l0",
        "weights/net.encoder.embedding.weight",
    } <= set(tags["histograms"])
    assert len(events.Histograms("weights/net.head.bias")) == 2  # steps 0 and 2 of 4
    assert "hidden/seq0/prediction/text_summary" in tags["tensors"]

    # the histogram is the profile over time: bucket t holds ||dL/dh_t||
    profile = events.Histograms("grad_flow/layer1")[-1].histogram_value
    assert len(profile.bucket) == 12  # pattern sequences are 12 steps long
    ratio = profile.bucket[0] / profile.bucket[-1]
    assert metrics["grad_flow/ratio"] == pytest.approx(ratio, rel=1e-5)
    # the charts get log10 of the ratios, which a linear axis draws whatever their size;
    # metrics.json keeps both
    assert {"grad_flow/log10_ratio", "grad_flow/log10_ratio_layer2"} <= set(tags["scalars"])
    assert not {"grad_flow/ratio", "grad_flow/ratio_layer2"} & set(tags["scalars"])
    scalar = events.Scalars("grad_flow/log10_ratio")[-1].value
    assert scalar == pytest.approx(math.log10(ratio), abs=1e-5)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["metrics"]["grad_flow/log10_ratio"] == pytest.approx(math.log10(ratio), abs=1e-5)
    assert "grad_flow/ratio_layer2" in record["metrics"]
