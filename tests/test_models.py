"""The scan models and the long-memory initialisations: parameter values, bad input, the replay,
every task kind, and learning real tasks quickly."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import QUIET, make_cfg

from rnnlab.callbacks import insight
from rnnlab.config_checks import check_values
from rnnlab.errors import RnnlabError
from rnnlab.nets import ModernNet, RecurrentNet, UnrolledNet, replay
from rnnlab.nets.modern import LAYERS
from rnnlab.predict import generate
from rnnlab.tasks.regression import SequenceRegressor
from rnnlab.train import train

CELLS = sorted(LAYERS)


# ---------------------------------------------------------------- initialisations


@pytest.mark.parametrize("net_cls", [RecurrentNet, UnrolledNet])
def test_chrono_sets_lstm_forget_biases_to_log_uniform_and_input_biases_to_their_negative(net_cls):
    torch.manual_seed(0)
    h, tmax = 200, 100
    net = net_cls(1, cell="lstm", input_size=3, hidden_size=h, init="chrono", chrono_tmax=tmax)
    b_ih, b_hh = net.rnn.bias_ih_l0, net.rnn.bias_hh_l0
    forget, gate_in = b_ih[h : 2 * h], b_ih[:h]
    assert forget.min() >= 0.0 and forget.max() <= math.log(tmax - 1) + 1e-6
    assert forget.max() > math.log(tmax - 1) - 0.1  # spread over the whole range, not constant
    assert torch.equal(gate_in, -forget)
    assert (b_hh[: 2 * h] == 0).all()  # the pair sums to the chrono value
    # exp(b_f) is uniform on (1, T_max - 1): its mean is about T_max / 2
    assert forget.exp().mean().item() == pytest.approx(tmax / 2, rel=0.15)


def test_chrono_for_gru_sets_the_z_gate_that_keeps_the_state():
    torch.manual_seed(0)
    h = 50
    net = RecurrentNet(1, cell="gru", input_size=3, hidden_size=h, init="chrono", chrono_tmax=10)
    z = net.rnn.bias_ih_l0[h : 2 * h]
    assert z.min() >= 0.0 and z.max() <= math.log(9) + 1e-6
    assert (net.rnn.bias_hh_l0[h : 2 * h] == 0).all()


@pytest.mark.parametrize(("cell", "gate"), [("lstm", 1), ("gru", 1)])
def test_forget_bias_is_the_total_bias_of_the_keeping_gate(cell, gate):
    net = RecurrentNet(1, cell=cell, input_size=3, hidden_size=8, num_layers=2, forget_bias=2.5)
    for layer in range(2):
        total = getattr(net.rnn, f"bias_ih_l{layer}") + getattr(net.rnn, f"bias_hh_l{layer}")
        assert (total[gate * 8 : (gate + 1) * 8] == 2.5).all()
    net = ModernNet(1, cell="minlstm", input_size=3, hidden_size=8, forget_bias=3.0)
    assert (net.rnn.layers[0].linear.bias[:8] == 3.0).all()


def test_identity_init_makes_an_irnn():
    torch.manual_seed(0)
    net = RecurrentNet(
        1,
        cell="rnn",
        nonlinearity="relu",
        input_size=4,
        hidden_size=30,
        num_layers=2,
        init="identity",
        init_std=0.01,
    )
    for layer in range(2):
        assert torch.equal(getattr(net.rnn, f"weight_hh_l{layer}"), torch.eye(30))
        assert (getattr(net.rnn, f"bias_ih_l{layer}") == 0).all()
        assert (getattr(net.rnn, f"bias_hh_l{layer}") == 0).all()
    assert net.rnn.weight_ih_l1.std().item() == pytest.approx(0.01, rel=0.1)


def test_lru_eigenvalues_lie_on_the_ring_with_the_normalisation_of_the_paper():
    torch.manual_seed(0)
    net = ModernNet(
        1, cell="lru", input_size=3, state_size=500, r_min=0.4, r_max=0.9, max_phase=math.pi / 10
    )
    layer = net.rnn.layers[0]
    lam = torch.exp(layer.log_lambda().detach())
    r = lam.abs()
    assert r.min() >= 0.4 - 1e-6 and r.max() <= 0.9 + 1e-6
    # |lambda|^2 is uniform on [r_min^2, r_max^2] (uniform on the ring's area)
    assert (r**2).mean().item() == pytest.approx((0.16 + 0.81) / 2, abs=0.03)
    phase = torch.angle(lam)
    assert phase.min() >= 0 and phase.max() <= math.pi / 10 + 1e-6
    gamma = layer.gamma_log.detach().exp()
    torch.testing.assert_close(gamma, torch.sqrt(1 - r**2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["clamp", "tanh"])
def test_indrnn_recurrent_weights_stay_within_the_bound(mode):
    torch.manual_seed(0)
    net = ModernNet(
        1, cell="indrnn", input_size=2, hidden_size=16, recurrent_bound=0.5, bound_mode=mode
    )
    layer = net.rnn.layers[0]
    u = layer.u().detach()
    assert u.min() >= 0 and u.max() <= 0.5
    with torch.no_grad():
        layer.recurrent_weight.fill_(50.0)  # an optimizer pushed it far out
    assert layer.u().max().item() == pytest.approx(0.5)
    x = torch.zeros(1, 3, 2)
    x[0, 0, 0] = 1.0
    with torch.no_grad():  # h_t = relu(Wx_t + b + u h_{t-1}) with the bounded u
        out, _ = net.rnn(x)
        drive = layer.linear(x)
        h1 = torch.relu(drive[0, 0])
        h2 = torch.relu(drive[0, 1] + 0.5 * h1)
    torch.testing.assert_close(out[0, 1], h2)


def test_s4d_starts_from_s4d_lin_with_steps_in_range():
    torch.manual_seed(0)
    net = ModernNet(
        1, cell="s4d", input_size=2, hidden_size=40, state_size=4, dt_min=0.01, dt_max=0.2
    )
    layer = net.rnn.layers[0]
    dt = layer.log_dt.detach().exp()
    assert dt.min() >= 0.01 - 1e-6 and dt.max() <= 0.2 + 1e-6
    assert torch.equal(layer.A_imag[0], math.pi * torch.arange(4.0))
    assert (layer.log_A_real.exp() == 0.5).all()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(cell="lru", r_min=-0.1), "model.r_min must be in [0, 1), got -0.1"),
        (dict(cell="lru", r_max=1.0), "model.r_max must be in [0, 1), got 1.0"),
        (dict(cell="lru", r_min=0.9, r_max=0.5), "model.r_min must not exceed model.r_max"),
        (dict(cell="indrnn", recurrent_bound=-1), "model.recurrent_bound must be a positive"),
        (dict(cell="indrnn", bound_mode="wrap"), "model.bound_mode must be clamp or tanh"),
        (dict(cell="s4d", dt_min=0.5, dt_max=0.1), "model.dt_min must not exceed model.dt_max"),
        (dict(cell="mingru", scan="fast"), "model.scan must be parallel or loop"),
        (dict(cell="mingru", scan_chunk=0), "model.scan_chunk must be a positive integer"),
        (dict(cell="lru", state_size=0), "model.state_size must be a positive integer"),
        (dict(cell="gru_plus"), "model.cell must be one of"),
    ],
)
def test_impossible_net_settings_are_one_clear_sentence(kwargs, needle):
    with pytest.raises(ValueError, match=None) as error:
        ModernNet(1, input_size=2, **kwargs)
    assert needle in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (dict(cell="lstm", init="chrono"), "model.init=chrono needs model.chrono_tmax"),
        (dict(cell="lstm", init="chrono", chrono_tmax=1), "model.chrono_tmax must be a number"),
        (dict(cell="rnn", init="chrono", chrono_tmax=10), "it needs cell lstm or gru"),
        (dict(cell="rnn", forget_bias=1.0), "model.forget_bias sets gate biases"),
        (dict(cell="lstm", init="identity"), "model.init=identity (IRNN) needs cell 'rnn'"),
        (dict(cell="lstm", init="xavier"), "model.init must be one of"),
    ],
)
def test_impossible_init_settings_are_one_clear_sentence(kwargs, needle):
    with pytest.raises(ValueError) as error:
        RecurrentNet(1, input_size=2, **kwargs)
    assert needle in str(error.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model=lru", "model.r_min=-0.5"], "model.r_min must be in [0, 1), got -0.5"),
        (["model=indrnn", "model.recurrent_bound=0"], "model.recurrent_bound must be a positive"),
        (["model=lstm", "model.chrono_tmax=1"], "model.chrono_tmax must be a number of steps"),
        (["model=mingru", "model.cell=lstm"], "model.cell must be one of mingru"),
        (["model=lstm", "model.cell=mingru"], "model.cell must be one of rnn, lstm, gru"),
    ],
)
def test_impossible_config_values_are_named_before_anything_is_built(overrides, needle, tmp_path):
    cfg = make_cfg(overrides, tmp_path)
    with pytest.raises(RnnlabError) as error:
        check_values(cfg)
    assert needle in str(error.value)


@pytest.mark.parametrize("model", ["mingru", "minlstm", "indrnn", "lru", "s4d"])
def test_every_shipped_model_config_passes_the_checks(model, tmp_path):
    check_values(make_cfg([f"model={model}"], tmp_path))


# ---------------------------------------------------------------- the replay and insight


def tiny_batch(output_mode="last"):
    torch.manual_seed(3)
    x = torch.randn(4, 9, 2, dtype=torch.float64)
    lengths = torch.tensor([9, 4, 7, 1])
    y = torch.randn(4, 9, 1) if output_mode == "sequence" else torch.randn(4, 1)
    return {"x": x, "y": y.double(), "lengths": lengths}


@pytest.mark.parametrize("output_mode", ["last", "sequence"])
@pytest.mark.parametrize("cell", CELLS)
def test_the_replay_reproduces_the_net_and_its_states(cell, output_mode):
    torch.manual_seed(0)
    net = ModernNet(
        1,
        cell=cell,
        input_size=2,
        hidden_size=6,
        num_layers=2,
        state_size=3,
        output_mode=output_mode,
    ).double()
    batch = tiny_batch(output_mode)
    trace = replay.trace(net, batch["x"], batch["lengths"])
    out = net(batch["x"], batch["lengths"])
    mask = (torch.arange(9) < batch["lengths"].unsqueeze(1)).unsqueeze(-1)
    if output_mode == "sequence":  # the replay does not zero the padded steps: compare the rest
        assert ((trace.output - out).abs() * mask).max().item() < 1e-10
    else:
        assert (trace.output - out).abs().max().item() < 1e-10
    # the state after the last step of the full-length sequence is the stack's final state
    _, h_n = net.rnn(net.encoder(batch["x"][:1]))
    for layer in range(2):
        real = net.rnn.layers[layer].to_real(h_n[layer])
        assert (trace.hidden[layer][-1][0] - real[0]).abs().max().item() < 1e-10
    if cell in ("mingru", "minlstm"):
        names = {"mingru": {"z"}, "minlstm": {"f", "i"}}[cell]
        assert set(trace.gates[0]) == names
        for g in trace.gates[0].values():
            assert g.shape == (4, 9, 6) and 0 < g.min() and g.max() < 1


def injected_norms(net, batch, loss_fn):
    """``||dL/dh_t||`` by running the stack up to t, injecting h_t as a leaf, and on from it."""
    x, norms = net.encoder(batch["x"]), []
    for t in range(x.shape[1]):
        prefix, state = net.rnn(x[:, : t + 1])
        h_t = state.detach().requires_grad_()
        if t + 1 < x.shape[1]:
            suffix, _ = net.rnn(x[:, t + 1 :], h_t)
        else:
            suffix = prefix[:, :0]
        out = torch.cat([prefix[:, :t].detach(), h_t[-1][:, None], suffix], dim=1)
        loss = loss_fn(net.readout(out), batch)
        (grad,) = torch.autograd.grad(loss, h_t)
        norms.append(grad.norm().item())
    return norms


@pytest.mark.parametrize("cell", ["mingru", "minlstm", "indrnn"])
def test_gradient_flow_through_the_replay_equals_a_direct_autograd_computation(cell):
    """One layer whose output is its state: dL/dh_t from the replay against injecting h_t."""
    torch.manual_seed(0)
    net = ModernNet(1, cell=cell, input_size=2, hidden_size=5).double()
    batch = tiny_batch()
    batch["lengths"] = None
    loss_fn = SequenceRegressor(net).loss
    norms = insight.gradient_flow(net, loss_fn, batch)
    assert len(norms) == 1 and norms[0].shape == (9,)
    assert norms[0].tolist() == pytest.approx(injected_norms(net, batch, loss_fn), rel=1e-6)
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("cell", ["lru", "s4d"])
def test_gradient_flow_reaches_every_step_of_a_complex_state(cell):
    torch.manual_seed(0)
    net = ModernNet(1, cell=cell, input_size=2, hidden_size=5, num_layers=2, state_size=3)
    batch = {k: v.float() if v.is_floating_point() else v for k, v in tiny_batch().items()}
    norms = insight.gradient_flow(net, SequenceRegressor(net).loss, batch)
    assert len(norms) == 2 and all(n.shape == (9,) for n in norms)
    assert all(torch.isfinite(n).all() and (n > 0).all() for n in norms)


def test_the_insight_callbacks_run_on_a_scan_model(cfg_factory):
    cfg = cfg_factory("model=lru", "data=adding", "data.T=12", "insight=all", "debug=fast", *QUIET)
    metrics = train(cfg)
    assert math.isfinite(metrics["test/mse"])


# ---------------------------------------------------------------- tasks, resume and learning


@pytest.mark.parametrize("model", CELLS)
def test_variable_length_classification_reads_the_last_valid_step(model, cfg_factory):
    cfg = cfg_factory(f"model={model}", "data=pattern", "data.min_len=4", "debug=fast", *QUIET)
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0


@pytest.mark.parametrize("model", CELLS)
def test_every_scan_model_runs_as_a_language_model(model, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("abcabcabd " * 60)
    cfg = make_cfg(
        [
            f"model={model}",
            "data=chars",
            f"data.path={path}",
            "data.seq_len=16",
            "data.batch_size=8",
            "debug=fast",
            *QUIET,
        ],
        tmp_path / "run",
    )
    metrics = train(cfg)
    assert math.isfinite(metrics["test/loss"])


def test_a_scan_model_resumes_from_its_last_checkpoint(cfg_factory, tmp_path):
    common = [
        "model=minlstm",
        "data=adding",
        "data.T=10",
        "data.n_train=256",
        *QUIET,
        "callbacks.early_stopping=null",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    first = train(cfg_factory(*common, "trainer.max_epochs=1"))
    resumed = train(cfg_factory(*common, "trainer.max_epochs=2", "resume=true"))
    assert math.isfinite(first["test/mse"]) and math.isfinite(resumed["test/mse"])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 1  # the second epoch ran after resuming the first


def test_mingru_learns_the_pattern_task(cfg_factory):
    metrics = train(
        cfg_factory(
            "data=pattern",
            "model=mingru",
            "model.num_layers=2",
            "optimizer.lr=0.01",
            "trainer.max_epochs=5",
            *QUIET,
        )
    )
    assert metrics["test/acc"] >= 0.95


def test_a_scan_language_model_learns_and_generates_with_its_carried_state(tmp_path):
    text = "the cat sat on the mat. " * 120
    path = tmp_path / "cat.txt"
    path.write_text(text)
    cfg = make_cfg(
        [
            "experiment=shakespeare",
            "model=mingru",
            f"data.path={path}",
            "data.seq_len=20",
            "data.batch_size=16",
            "data.val_fraction=0.1",
            "data.test_fraction=0.1",
            "model.hidden_size=48",
            "model.num_layers=2",
            "model.embedding_dim=16",
            "model.dropout=0.0",
            "optimizer.lr=0.01",
            "trainer.max_epochs=8",
            "trainer.accelerator=cpu",
            "callbacks.early_stopping=null",
            *QUIET,
        ],
        tmp_path / "run",
    )
    metrics = train(cfg)
    assert metrics["test/loss"] < 0.3  # nats per character; the unigram baseline is about 2.3
    greedy = generate(tmp_path / "run" / "checkpoints" / "best.ckpt", "the cat ", 40, 0.0)
    assert greedy == text[8:48]


@pytest.mark.slow
def test_a_scan_model_trains_under_ddp_like_one_process(tmp_path):
    """Two CPU processes with the global batch split between them give one process's numbers."""
    from conftest import run_cli

    tiny = [
        "model=lru",
        "model.hidden_size=8",
        "model.state_size=4",
        "data=sine",
        "data.seq_len=20",
        "data.n_train=128",
        "data.n_val=32",
        "data.n_test=32",
        "data.batch_size=16",
        "trainer.max_epochs=1",
        *QUIET,
    ]
    result = run_cli(["trainer=ddp_cpu", *tiny, f"paths.log_dir={tmp_path / 'ddp'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = list((tmp_path / "ddp").glob("*/*/metrics.json"))
    import json

    ddp = json.loads(record.read_text())["metrics"]
    single = train(make_cfg(["trainer=cpu", *tiny], tmp_path / "single"))
    for key, value in single.items():
        assert ddp[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.mark.slow
def test_chrono_lifts_the_lstm_off_the_adding_plateau_at_T100(cfg_factory):
    """The same LSTM and seed: torch's default init stays near the 0.167 baseline, chrono solves it."""
    common = [
        "model=lstm",
        "data=adding",
        "data.T=100",
        "data.n_train=4096",
        "data.n_val=512",
        "data.n_test=512",
        "data.batch_size=32",
        "trainer.max_epochs=15",
        "seed=1",
        "callbacks.early_stopping=null",
        *QUIET,
    ]
    default = train(cfg_factory(*common, subdir="default"))
    chrono = train(
        cfg_factory(*common, "model.init=chrono", "model.chrono_tmax=100", subdir="chrono")
    )
    assert default["test/mse"] > 0.1
    assert chrono["test/mse"] < 0.01
