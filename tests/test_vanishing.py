"""The vanishing-gradient study: the preset, the report of a finished sweep, the script."""

from __future__ import annotations

import json
import math

import pytest
from conftest import run_cli


def fake_job(root, num: int, cfg, metrics: dict, overrides: list[str]) -> None:
    from omegaconf import OmegaConf

    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, job / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    (job / "metrics.json").write_text(json.dumps({"metrics": metrics}))


def test_the_vanishing_report_reads_each_job_and_draws_error_and_gradient_flow_against_T(
    cfg_factory, tmp_path
):
    from rnnlab.vanishing import collect, report

    sweep = tmp_path / "sweep"
    jobs = [
        ("rnn", "adding", 10, {"test/mse": 0.001, "grad_flow/log10_ratio": -2.0}),
        ("rnn", "adding", 100, {"test/mse": 0.17, "grad_flow/log10_ratio": -20.0}),
        ("lstm", "adding", 100, {"test/mse": 0.01, "grad_flow/log10_ratio": -1.0}),
        ("gru", "copy", 20, {"test/loss": 0.0577, "test/acc": 0.99}),
    ]
    for num, (model, data, T, metrics) in enumerate(jobs):
        overrides = [f"model={model}", f"data={data}", f"data.T={T}"]
        fake_job(sweep, num, cfg_factory(*overrides), metrics, overrides)
    (sweep / "multirun.yaml").write_text("{}\n")
    runs = collect(sweep)
    assert [(r.task, r.model, r.T) for r in runs] == [
        ("adding", "lstm", 100),
        ("adding", "rnn", 10),
        ("adding", "rnn", 100),
        ("copy", "gru", 20),
    ]
    assert runs[2].error == pytest.approx(0.17 * 6)  # MSE over the trivial 1/6
    assert runs[2].log10_ratio == -20.0
    copy_baseline = 10 * math.log(8) / (20 + 20)
    assert runs[3].metric == "test/loss" and runs[3].baseline == pytest.approx(copy_baseline)
    assert runs[3].log10_ratio is None

    path = report(sweep)
    assert path == sweep / "vanishing.png"
    assert path.read_bytes().startswith(b"\x89PNG")
    table = (sweep / "vanishing.md").read_text().splitlines()
    assert table[2] == "| adding | lstm | 100 | test/mse | 0.0100 | 0.1667 | 0.060 | -1.0 |"
    assert len(table) == 2 + len(jobs)


def test_the_vanishing_report_script_names_a_missing_sweep(tmp_path):

    result = run_cli([str(tmp_path / "nowhere")], script="scripts/vanishing_report.py")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no sweep directory at {tmp_path / 'nowhere'}"


def test_the_vanishing_preset_sweeps_models_tasks_and_lengths_with_grad_flow_on(cfg_factory):
    from hydra import compose, initialize_config_dir

    from rnnlab.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=vanishing"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {
        "model": "rnn,lstm,gru",
        "data": "adding,copy",
        "data.T": "10,50,100,200",
    }
    assert cfg.hydra.callbacks.vanishing_report._target_ == "rnnlab.vanishing.VanishingReport"
    assert cfg.callbacks.grad_flow._target_ == "rnnlab.callbacks.insight.GradientFlow"
    assert cfg.callbacks.early_stopping is None


@pytest.mark.slow
def test_the_vanishing_study_runs_as_one_command(tmp_path):

    sweep = tmp_path / "sweep"
    result = run_cli(
        [
            "experiment=vanishing",
            "model=rnn,gru",
            "data=adding",
            "data.T=5,10",
            "data.n_train=64",
            "data.n_val=32",
            "data.n_test=32",
            "trainer.max_epochs=1",
            f"hydra.sweep.dir={sweep}",
        ],
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (sweep / "vanishing.png").read_bytes().startswith(b"\x89PNG")
    rows = (sweep / "vanishing.md").read_text().splitlines()[2:]
    assert len(rows) == 4 and all(r.startswith("| adding |") for r in rows)
