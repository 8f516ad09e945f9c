"""The entry point end to end: every model x data pair, real learning, run artifacts, the CLI."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import QUIET, ROOT, run_cli

from rnnlab.evaluate import evaluate
from rnnlab.review import event_dir
from rnnlab.train import train

MODELS = ["rnn", "lstm", "gru", "char_rnn", "mingru", "minlstm", "indrnn", "lru", "s4d"]
DATA = ["pattern", "counting", "sine", "adding", "copy", "parity"]


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_and_data_pair_runs_fast_dev_run(cfg_factory, model, data):
    cfg = cfg_factory(f"model={model}", f"data={data}", "debug=fast", *QUIET)
    metrics = train(cfg)
    assert any(k.startswith("test/") for k in metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_lstm_learns_the_pattern_task(cfg_factory):
    metrics = train(cfg_factory("data=pattern", "model=lstm", "trainer.max_epochs=5", *QUIET))
    assert metrics["test/acc"] >= 0.95


def test_counting_regression_beats_predicting_the_mean_by_a_wide_margin(cfg_factory):
    cfg = cfg_factory("data=counting", "trainer.max_epochs=5", "data.n_train=2048", *QUIET)
    metrics = train(cfg)
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    dm.setup()
    y = dm.splits["test"].tensors["y"]
    mean_mse = ((y - dm.splits["train"].tensors["y"].mean()) ** 2).mean().item()
    assert metrics["test/mse"] < 0.05 * mean_mse


def test_lstm_solves_the_adding_problem_at_T50(cfg_factory):
    metrics = train(
        cfg_factory(
            "data=adding", "data.T=50", "trainer.max_epochs=6", "data.batch_size=32", *QUIET
        )
    )
    assert metrics["test/mse"] < 0.02  # always predicting 1 scores 0.167


def test_a_run_leaves_checkpoints_events_and_metrics(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "data=pattern",
        "trainer.max_epochs=2",
        "data.n_train=512",
        "trainer.log_every_n_steps=2",
        *QUIET,
    )
    metrics = train(cfg)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()

    record = json.loads((run / "metrics.json").read_text())
    assert record["metrics"]["test/acc"] == pytest.approx(metrics["test/acc"])
    assert record["monitor"] == "val/acc"
    assert record["epochs"] == 2

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # TensorBoard lists the run by what it is: <run>/lstm-on-pattern/
    assert event_dir(run) == run / "lstm-on-pattern"
    events = EventAccumulator(str(event_dir(run))).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss_step", "val/loss", "val/acc", "val/acc_best", "test/acc"} <= tags
    assert len(events.Scalars("val/acc")) == 2
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"], abs=1e-6)
    # the HParams tab knows the run's hyperparameters and the metrics to compare it by: the same
    # two columns in every run (the best monitored value, its test value), then the task's own
    hparams, metric_tags = _hparams_session(event_dir(run))
    assert hparams["model.hidden_size"] == 64 and hparams["model.cell"] == "lstm"
    assert {"hparams/best", "hparams/test", "val/acc", "val/acc_best", "test/acc"} <= metric_tags
    best = [e.value for e in events.Scalars("hparams/best")]
    assert best == pytest.approx([e.value for e in events.Scalars("val/acc_best")], abs=1e-6)
    assert events.Scalars("hparams/test")[-1].value == pytest.approx(metrics["test/acc"], abs=1e-6)

    # eval rebuilds the run from the checkpoint alone and gets the same test numbers
    again = evaluate(run / "checkpoints" / "best.ckpt")
    assert again["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)


def _hparams_session(logdir):
    """The hyperparameters and metric tags a run registered with TensorBoard's HParams plugin."""
    from google.protobuf.json_format import MessageToDict
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams, metrics = {}, set()
    for path in logdir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(
                    value.metadata.plugin_data.content
                )
                if data.HasField("session_start_info"):
                    for k, v in data.session_start_info.hparams.items():
                        hparams[k] = MessageToDict(v)
                if data.HasField("experiment"):
                    metrics |= {m.name.tag for m in data.experiment.metric_infos}
    return hparams, metrics


def test_help_and_cfg_answer_without_importing_torch():
    code = (
        "import sys; sys.argv = ['train.py', '--cfg', 'job']\n"
        "from rnnlab.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "model:" in out.stdout and "NO_TORCH" in out.stdout
    help_run = run_cli(["--help"], timeout=60)
    assert help_run.returncode == 0
    assert "data: adding, chars, copy, counting" in help_run.stdout


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model=lstmm", "model/lstmm"),
        ("model.hiden_size=3", "hiden_size"),
        ("model.hidden_size=0", "model.hidden_size must be a positive integer, got 0"),
        ("data.T=-3", "data.T must be a positive integer, got -3"),
    ],
)
def test_bad_overrides_exit_non_zero_naming_the_problem(override, needle, tmp_path):
    result = run_cli([override, f"paths.log_dir={tmp_path}"], timeout=120)
    assert result.returncode != 0
    assert needle in result.stderr + result.stdout
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained
