"""The long-range study: the solve check, the report of a finished sweep, the preset's checks."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli

TINY = [
    "experiment=long_range",
    "logger=none",
    "data.n_train=256",
    "data.n_val=64",
    "data.n_test=64",
    "data.batch_size=16",
    "callbacks.solve.every_n_steps=5",
    "model.hidden_size=16",
]


def test_the_criterion_is_the_mse_for_adding_and_the_recalled_symbols_right_for_copy():
    from rnnlab.callbacks.solve import solve_value

    y = torch.tensor([[1.0], [0.5]])
    assert solve_value("regression", torch.tensor([[1.1], [0.5]]), y) == pytest.approx(0.005)
    # copy: blanks (0) do not count; 3 of the 4 recalled symbols right, every blank wrong
    y = torch.tensor([[0, 0, 3, 1], [0, 0, 2, 2]])
    predicted = torch.tensor([[5, 5, 3, 1], [5, 5, 2, 4]])
    logits = torch.nn.functional.one_hot(predicted, 9).float()
    assert solve_value("classification", logits, y) == pytest.approx(0.75)


def test_a_run_stops_at_the_first_check_that_passes_and_records_steps_sequences_and_seconds(
    cfg_factory,
):
    from rnnlab.train import train

    # any net has an adding MSE below 10: the first check, after 5 steps of 16 sequences, passes
    cfg = cfg_factory(
        *TINY, "variant=gru", "problem=adding_100", "data.T=10", "callbacks.solve.mse_below=10.0"
    )
    metrics = train(cfg)
    assert metrics["solve/solved"] == 1.0
    assert metrics["solve/steps"] == 5.0
    assert metrics["solve/sequences"] == 80.0
    assert 0 < metrics["solve/seconds"] < 60
    assert metrics["solve/budget_steps"] == 400.0  # problem=adding_100's budget, 40000 / T
    record = json.loads(open(f"{cfg.paths.output_dir}/metrics.json").read())
    assert record["global_step"] == 5
    assert record["metrics"]["solve/steps"] == 5.0


def test_the_solve_record_is_a_column_of_the_hparams_tab_with_its_value(cfg_factory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from rnnlab.review import event_dir
    from rnnlab.train import train

    tiny = [o for o in TINY if o != "logger=none"]
    cfg = cfg_factory(
        *tiny, "variant=gru", "problem=adding_100", "data.T=10", "callbacks.solve.mse_below=10.0"
    )
    train(cfg)
    events = EventAccumulator(
        str(event_dir(cfg.paths.output_dir)), size_guidance={"tensors": 0, "scalars": 0}
    ).Reload()
    content = events.summary_metadata["_hparams_/experiment"].plugin_data.content
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
    columns = [m.name.tag for m in experiment.metric_infos]
    assert columns[-4:] == ["solve/solved", "solve/steps", "solve/sequences", "solve/seconds"]
    assert [e.value for e in events.Scalars("solve/steps")] == [5.0]
    assert [e.value for e in events.Scalars("solve/solved")] == [1.0]


def test_a_run_that_does_not_solve_stops_at_its_budget_of_steps(cfg_factory):
    from rnnlab.train import train

    cfg = cfg_factory(
        *TINY,
        "variant=lstm_chrono",
        "problem=copy_100",
        "data.T=5",
        "data.copy_len=3",
        "callbacks.solve.budget_steps=7",
        "callbacks.solve.recall_at_least=1.0",
    )
    metrics = train(cfg)
    record = json.loads(open(f"{cfg.paths.output_dir}/metrics.json").read())
    assert record["global_step"] == 7
    assert metrics["solve/solved"] == 0.0 and metrics["solve/budget_steps"] == 7.0
    assert "solve/steps" not in metrics
    assert 0 <= metrics["solve/value"] < 1.0  # checked at step 5 and at the budget, step 7


@pytest.mark.slow
def test_a_gru_solves_adding_at_T_10_within_its_budget_and_stops_there(cfg_factory):
    from rnnlab.train import train

    cfg = cfg_factory(
        "experiment=long_range",
        "logger=none",
        "variant=gru",
        "problem=adding_100",
        "data.T=10",
        "callbacks.solve.budget_steps=800",
    )
    metrics = train(cfg)
    record = json.loads(open(f"{cfg.paths.output_dir}/metrics.json").read())
    assert metrics["solve/solved"] == 1.0
    steps = metrics["solve/steps"]
    assert 0 < steps < 800 and steps % 25 == 0  # seed 42 on this CPU: 300
    assert record["global_step"] == steps
    assert metrics["solve/sequences"] == steps * 32
    assert metrics["solve/value"] < 0.01


def fake_job(root, num: int, cfg, metrics: dict, overrides: list[str], status, steps) -> None:
    from omegaconf import OmegaConf

    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, job / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    record = {"metrics": metrics, "status": status, "global_step": steps}
    (job / "metrics.json").write_text(json.dumps(record))


def solved(steps: int, seconds: float, budget: int) -> dict:
    return {
        "solve/solved": 1.0,
        "solve/steps": float(steps),
        "solve/sequences": float(steps * 32),
        "solve/seconds": seconds,
        "solve/budget_steps": float(budget),
        "solve/value": 0.005,
    }


def unsolved(budget: int, value: float) -> dict:
    return {"solve/solved": 0.0, "solve/budget_steps": float(budget), "solve/value": value}


def test_the_report_has_a_row_per_variant_and_says_which_runs_did_not_solve(cfg_factory, tmp_path):
    from rnnlab.long_range import collect, report

    sweep = tmp_path / "sweep"
    jobs = [
        ("lstm_chrono", "adding_100", solved(150, 12.4, 400), "completed", 150),
        ("lstm", "adding_100", unsolved(400, 0.152), "completed", 400),
        ("lstm", "adding_500", unsolved(80, 0.161), "completed", 80),
        ("rnn_identity", "adding_100", unsolved(400, float("nan")), "nan_loss", 123),
        ("gru", "copy_100", solved(375, 40.0, 400), "completed", 375),
        ("gru", "adding_500", unsolved(80, 0.158), "completed", 30),  # ended before its budget
    ]
    for num, (variant, problem, metrics, status, steps) in enumerate(jobs):
        overrides = [f"variant={variant}", f"problem={problem}", "experiment=long_range"]
        cfg = cfg_factory(f"variant={variant}", f"problem={problem}", "experiment=long_range")
        fake_job(sweep, num, cfg, metrics, overrides, status, steps)
    (sweep / "multirun.yaml").write_text("{}\n")
    (sweep / "99").mkdir()  # a job that never wrote metrics.json is left out
    runs = collect(sweep)
    assert [(r.variant, r.task, r.T) for r in runs] == [
        ("rnn_identity", "adding", 100),
        ("lstm", "adding", 100),
        ("lstm", "adding", 500),
        ("lstm_chrono", "adding", 100),
        ("gru", "adding", 500),
        ("gru", "copy", 100),
    ]
    assert runs[3].steps == 150 and runs[3].sequences == 4800 and runs[1].steps is None

    path = report(sweep)
    assert path == sweep / "long_range.png"
    assert path.read_bytes().startswith(b"\x89PNG")
    table = (sweep / "long_range.md").read_text().splitlines()
    assert table == [
        "| variant | adding T=100 | adding T=500 | copy T=100 |",
        "|---|---|---|---|",
        "| rnn_identity | stopped: nan_loss at step 123 | not run | not run |",
        "| lstm | not within budget (400 steps; last check 0.152) "
        "| not within budget (80 steps; last check 0.161) | not run |",
        "| lstm_chrono | 150 (4,800 seq, 12 s) | not run | not run |",
        "| gru | not run | not solved in 30 steps (budget 80; last check 0.158) "
        "| 375 (12,000 seq, 40 s) |",
        "| lstm, published (Hochreiter & Schmidhuber 1997, Table 7) | 74,000 seq | 209,000 seq |  |",
    ]


def test_the_report_script_names_a_missing_sweep(tmp_path):
    result = run_cli([str(tmp_path / "nowhere")], script="scripts/long_range_report.py")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no sweep directory at {tmp_path / 'nowhere'}"


@pytest.mark.parametrize(
    "override, sentence",
    [
        (
            "callbacks.solve.budget_steps=0",
            "callbacks.solve.budget_steps must be a positive integer, got 0",
        ),
        (
            "variant=lstm,chrono",
            "could not find 'variant/chrono': choose variant= from gru, "
            "indrnn, lru, lstm, lstm_chrono, lstm_forget_bias, mingru, minlstm, rnn, rnn_identity, s4d",
        ),
    ],
)
def test_an_impossible_budget_or_an_unknown_variant_is_one_sentence_before_any_job(
    tmp_path, override, sentence
):
    sweep = tmp_path / "sweep"
    result = run_cli(["experiment=long_range", override, f"hydra.sweep.dir={sweep}"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {sentence}"
    assert not any(sweep.glob("*/metrics.json"))  # no job ran


@pytest.mark.slow
def test_the_subset_command_writes_the_table_and_the_plot_into_the_sweep_folder(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        [
            *TINY,
            "variant=rnn,lstm_chrono",
            "problem=adding_100",
            "data.T=10",
            "callbacks.solve.budget_steps=10",
            "callbacks.solve.mse_below=10.0",
            f"hydra.sweep.dir={sweep}",
        ],
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (sweep / "long_range.png").read_bytes().startswith(b"\x89PNG")
    table = (sweep / "long_range.md").read_text().splitlines()
    assert table[0] == "| variant | adding T=10 |"
    assert [line.split(" | ")[0] for line in table[2:]] == ["| rnn", "| lstm_chrono"]
    assert all(
        line.endswith("s) |") and line.split(" | ")[1].startswith("5 (80 seq") for line in table[2:]
    )
    assert "Long-range study:" in result.stdout + result.stderr


def test_runs_of_a_second_sweep_join_the_report_and_replace_the_same_cell(cfg_factory, tmp_path):
    from rnnlab.long_range import collect

    for sweep, jobs in (
        (
            "main",
            [
                ("lstm", "adding_100", unsolved(400, 0.15), 400),
                ("gru", "copy_100", unsolved(400, 0.1), 400),
            ],
        ),
        ("more", [("lstm", "adding_100", solved(900, 80.0, 2000), 900)]),
    ):
        for num, (variant, problem, metrics, steps) in enumerate(jobs):
            overrides = [f"variant={variant}", f"problem={problem}", "experiment=long_range"]
            cfg = cfg_factory(*overrides)
            fake_job(tmp_path / sweep, num, cfg, metrics, overrides, "completed", steps)
    runs = collect(tmp_path / "main", tmp_path / "more")
    assert [(r.variant, r.task, r.solved, r.steps, r.budget_steps) for r in runs] == [
        ("lstm", "adding", True, 900, 2000),
        ("gru", "copy", False, None, 400),
    ]
