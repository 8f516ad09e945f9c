"""Sweeps end to end: grids, Optuna studies with pruning, resume, failures, the leaderboard."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import CONF_DIR, run_cli
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from test_train import _hparams_session

from hydra_plugins.rnnlab_optuna_sweeper._impl import OptunaSweeperImpl, search_space
from rnnlab.review import event_dir
from rnnlab.sweeps import aggregate, leaderboard, load_sweep

# tiny runs: 2 batches of the adding problem at T=5, one or two epochs, nothing printed per step
TINY = [
    "data.T=5",
    "data.n_train=128",
    "data.n_val=64",
    "data.n_test=64",
    "data.batch_size=64",
    "model.hidden_size=8",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
OPTUNA = ["hydra/sweeper=rnnlab_optuna", "hydra.sweeper.study_name=tiny"]


def job_overrides(job: Path) -> list[str]:
    return yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())


def record(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def storage_of(sweep_dir: Path) -> str:
    return f"sqlite:///{sweep_dir / 'optuna.db'}"


# --- a 2 x 2 grid: model x seed -------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory) -> tuple[Path, str]:
    sweep_dir = tmp_path_factory.mktemp("grid")
    out = run_cli(["-m", "model=rnn,gru", "seed=1,2", f"hydra.sweep.dir={sweep_dir}", *TINY])
    assert out.returncode == 0, out.stderr[-3000:]
    return sweep_dir, out.stdout


@pytest.fixture(scope="module")
def grid(grid_run) -> Path:
    return grid_run[0]


def test_a_grid_ends_with_the_top_of_its_leaderboard_and_where_the_files_are(grid_run):
    grid, stdout = grid_run
    summary = stdout.split("Sweep summary: ", 1)[1]
    assert summary.startswith(
        "4 trials (grid): 4 complete, 0 pruned, 0 failed; ranked by val/mse_best (min)"
    )
    table = [line for line in summary.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| job | model | seed | val/mse_best | test/mse | status |")
    assert len(table) == 1 + 4  # the header and every trial (at most five are printed)
    printed = [float(line.split(" | ")[3]) for line in table[1:]]
    assert printed == sorted(printed)  # best first
    best = min(record(j)["metrics"]["val/mse_best"] for j in grid.iterdir() if j.name.isdigit())
    assert printed[0] == pytest.approx(best, rel=1e-3)
    assert f"Full leaderboard: {grid / 'leaderboard.md'} (and leaderboard.csv)" in summary
    assert f"Plots: {grid / 'sweep.png'}" in summary
    assert (grid / "leaderboard.csv").is_file() and (grid / "sweep.png").is_file()


def test_sweep_png_has_integer_ticks_for_integers_and_no_pruned_legend_without_pruning(grid):
    import matplotlib.pyplot as plt

    from rnnlab.sweeps import sweep_figure

    fig = sweep_figure(load_sweep(grid))
    try:
        assert "pruned" not in fig._suptitle.get_text()
        seed_axis = {ax.get_xlabel(): ax for ax in fig.axes}["seed"]
        ticks = [t for t in seed_axis.get_xticks() if 1 <= t <= 2]
        assert ticks == [1.0, 2.0]  # not 1.2, 1.4, ...
    finally:
        plt.close(fig)


def test_a_grid_runs_every_combination_in_its_own_job_directory(grid):
    jobs = sorted(p for p in grid.iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    combos = {
        tuple(o for o in job_overrides(j) if o.split("=")[0] in ("model", "seed")) for j in jobs
    }
    assert combos == {("model=rnn", "seed=1"), ("model=rnn", "seed=2"), ("model=gru", "seed=1"),
                      ("model=gru", "seed=2")}  # fmt: skip
    for job in jobs:
        rec = record(job)
        assert rec["monitor"] == "val/mse" and rec["mode"] == "min" and rec["epochs"] == 1
        assert math.isfinite(rec["metrics"]["val/mse_best"])


def test_every_grid_job_is_in_the_tensorboard_hparams_tab_with_its_swept_keys(grid):
    seen = set()
    for job in sorted(p for p in grid.iterdir() if p.name.isdigit()):
        hparams, metric_tags = _hparams_session(event_dir(job))
        assert {"val/mse", "val/mse_best", "test/mse"} <= metric_tags
        seen.add((hparams["model.cell"], float(hparams["seed"])))
    assert seen == {("rnn", 1.0), ("rnn", 2.0), ("gru", 1.0), ("gru", 2.0)}


def test_the_summary_ranks_the_grid_and_folds_seeds_into_mean_and_std(grid):
    out = run_cli([str(grid)], script="scripts/summarize_sweep.py", timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (
        "4 trials (grid): 4 complete, 0 pruned, 0 failed; ranked by val/mse_best (min)"
        in out.stdout
    )
    values = {
        (o["model"], o["seed"]): record(grid / str(o["job"]))["metrics"]["val/mse_best"]
        for o in (
            {**dict(x.split("=") for x in job_overrides(j)), "job": j.name}
            for j in grid.iterdir()
            if j.name.isdigit()
        )
    }
    with (grid / "leaderboard.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["COMPLETE"] * 4
    ranked = [float(r["val/mse_best"]) for r in rows]
    assert ranked == sorted(ranked)  # best (lowest) first
    for row in rows:
        assert float(row["val/mse_best"]) == pytest.approx(
            values[(row["model"], row["seed"])], abs=1e-6
        )
    with (grid / "seeds.csv").open() as f:
        folded = {r["model"]: r for r in csv.DictReader(f)}
    for model in ("rnn", "gru"):
        pair = [values[(model, "1")], values[(model, "2")]]
        assert int(folded[model]["n"]) == 2
        assert float(folded[model]["val/mse_best mean"]) == pytest.approx(
            statistics.fmean(pair), abs=1e-6
        )
        assert float(folded[model]["val/mse_best std"]) == pytest.approx(
            statistics.stdev(pair), abs=1e-6
        )
    md = (grid / "leaderboard.md").read_text()
    assert md.count("| COMPLETE |") == 4 and "## Mean and std over seeds" in md
    assert (grid / "sweep.png").stat().st_size > 5000
    # the function API gives the same fold
    sweep = load_sweep(grid)
    assert sweep.swept_keys() == ["model", "seed"]
    assert {r["model"]: r["n"] for r in aggregate(sweep)} == {"rnn": 2, "gru": 2}


# --- an Optuna study: pruning, then resume ----------------------------------------------------

STUDY = [
    *OPTUNA,
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=1",
    "hydra.sweeper.pruner.n_warmup_steps=0",
    "hydra.sweeper.sampler.seed=0",
    "optimizer.lr=choice(1e-9,0.02)",  # the search space, given on the command line
    "data.n_train=256",
    "data.batch_size=32",
    "trainer.max_epochs=2",
]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """Two enqueued trials (a learning one, then lr=1e-9 which the median pruner stops), then a resume."""
    sweep_dir = tmp_path_factory.mktemp("study")
    first = optuna.create_study(study_name="tiny", storage=storage_of(sweep_dir))
    first.enqueue_trial({"optimizer.lr": 0.02})
    first.enqueue_trial({"optimizer.lr": 1e-9})
    args = ["-m", *TINY, *STUDY, f"hydra.sweep.dir={sweep_dir}"]
    out = run_cli([*args, "hydra.sweeper.n_trials=2"])
    assert out.returncode == 0, out.stderr[-3000:]
    before = optuna.load_study(study_name="tiny", storage=storage_of(sweep_dir)).get_trials()
    mtimes = {n: (sweep_dir / str(n) / ".hydra" / "overrides.yaml").stat().st_mtime for n in (0, 1)}
    resumed = run_cli([*args, "hydra.sweeper.n_trials=3"])  # the same command, one more trial
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = optuna.load_study(study_name="tiny", storage=storage_of(sweep_dir)).get_trials()
    return {
        "dir": sweep_dir,
        "before": before,
        "mtimes": mtimes,
        "resumed": resumed,
        "after": after,
    }


def test_a_trial_worse_than_the_median_is_pruned_and_recorded_as_pruned(study):
    good, bad = study["before"]
    assert good.state == optuna.trial.TrialState.COMPLETE and good.params == {"optimizer.lr": 0.02}
    assert bad.state == optuna.trial.TrialState.PRUNED and bad.params == {"optimizer.lr": 1e-9}
    # reported each validation (step = epoch); lr=1e-9 is worse than the only finished trial at epoch 0
    assert sorted(good.intermediate_values) == [0, 1]
    assert list(bad.intermediate_values) == [0]
    assert bad.intermediate_values[0] > good.intermediate_values[0]
    # the entry point returned the best monitored value, which the study holds
    rec = record(study["dir"] / "0")
    assert good.value == pytest.approx(rec["metrics"]["val/mse_best"], abs=1e-6)
    assert good.value == pytest.approx(min(good.intermediate_values.values()), abs=1e-6)
    assert not (study["dir"] / "1" / "metrics.json").exists()  # stopped before testing


def test_relaunching_the_same_study_keeps_finished_trials_and_runs_only_the_rest(study):
    after = optuna.load_study(study_name="tiny", storage=storage_of(study["dir"])).get_trials()
    assert [t.number for t in after] == [0, 1, 2]
    for old, new in zip(study["before"], after[:2], strict=True):
        assert (new.state, new.value, new.datetime_start) == (
            old.state,
            old.value,
            old.datetime_start,
        )
    for n, mtime in study["mtimes"].items():  # job directories 0 and 1 were not run again
        assert (study["dir"] / str(n) / ".hydra" / "overrides.yaml").stat().st_mtime == mtime
    assert after[2].state.is_finished() and (study["dir"] / "2" / ".hydra").is_dir()
    assert "2 of 3 trials already finished" in study["resumed"].stderr + study["resumed"].stdout


def test_a_study_ends_with_its_counts_and_the_pruned_legend_in_its_plot(study):
    import matplotlib.pyplot as plt

    from rnnlab.sweeps import sweep_figure

    stdout = study["resumed"].stdout
    assert "Sweep summary: 3 trials (Optuna study 'tiny'): " in stdout
    # trial 2 drew lr=1e-9 with its seed (0 + 2), as trial 1 did, and was pruned as trial 1 was
    assert study["after"][2].params == {"optimizer.lr": 1e-9}
    assert study["after"][2].user_attrs["sampler_seed"] == 2
    assert "3 trials (Optuna study 'tiny'): 1 complete, 2 pruned, 0 failed" in stdout
    assert f"Full leaderboard: {study['dir'] / 'leaderboard.md'}" in stdout
    assert str(study["dir"] / "optimization_history.png") in stdout
    fig = sweep_figure(load_sweep(study["dir"]))
    try:
        assert fig._suptitle.get_text().endswith("; orange = pruned")
    finally:
        plt.close(fig)


def test_the_summary_of_a_study_lists_pruned_trials_and_the_optimization_history(study):
    sweep = load_sweep(study["dir"])  # finds the study through the trials' overrides
    rows = {r["job"]: r for r in leaderboard(sweep)}
    assert rows[1]["status"] == "PRUNED" and rows[1]["error"] == "pruned after epoch 1"
    assert rows[0]["val/mse_best"] == pytest.approx(study["before"][0].value, abs=1e-6)
    assert rows[1]["val/mse_best"] == pytest.approx(study["before"][1].value, abs=1e-6)
    out = run_cli([str(study["dir"])], script="scripts/summarize_sweep.py", timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "3 trials (Optuna study 'tiny')" in out.stdout
    assert (study["dir"] / "optimization_history.png").stat().st_size > 5000


def test_a_relaunch_draws_new_points_each_from_a_seed_recorded_on_its_trial(tmp_path):
    """The same command again: trials 1 and 2 are not trial 0 once more (one seed for every
    process drew the same sequence each time)."""
    args = ["-m", *TINY, *OPTUNA, "hydra.sweeper.sampler.seed=1234", f"hydra.sweep.dir={tmp_path}"]
    args += ["hydra/sweeper/pruner=none", "optimizer.lr=tag(log, interval(1e-4, 1e-1))"]
    for n_trials in (1, 3):
        out = run_cli([*args, f"hydra.sweeper.n_trials={n_trials}"])
        assert out.returncode == 0, out.stderr[-3000:]
    trials = optuna.load_study(study_name="tiny", storage=storage_of(tmp_path)).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    lrs = [t.params["optimizer.lr"] for t in trials]
    assert len(set(lrs)) == 3
    assert [t.user_attrs["sampler_seed"] for t in trials] == [1234, 1235, 1236]
    for trial in trials:  # each point drawn again from its recorded seed alone
        again = optuna.create_study(
            sampler=optuna.samplers.TPESampler(seed=trial.user_attrs["sampler_seed"])
        ).ask({"optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True)})
        assert again.params["optimizer.lr"] == trial.params["optimizer.lr"]


BAD_SETTINGS = {
    "hydra.sweeper.direction=upward": "hydra.sweeper.direction=upward is not a direction: use "
    "minimize or maximize (or min/max), or null to follow monitor.mode",
    "hydra.sweeper.n_trials=-1": "hydra.sweeper.n_trials=-1 is not allowed: the study needs a "
    "whole number of trials, at least 1",
    "hydra.sweeper.n_jobs=0": "hydra.sweeper.n_jobs=0 is not allowed: trials run at once must be "
    "a whole number, at least 1",
    "optimizer.lr=tag(log, interval(1e-2, 1e-4))": "optimizer.lr=tag(log, interval(1e-2, 1e-4)) "
    "is not a search space: the low end (0.01) must not be above the high end (0.0001)",
    "optimizer.lr=tag(log, interval(0, 1e-2))": "optimizer.lr=tag(log, interval(0, 1e-2)) is not "
    "a search space: a log interval needs a low end above 0, got 0",
}


@pytest.mark.parametrize("setting", list(BAD_SETTINGS))
def test_a_bad_sweeper_setting_is_refused_in_one_sentence_before_any_trial(setting, tmp_path):
    out = run_cli(["-m", *OPTUNA, setting, f"hydra.sweep.dir={tmp_path / 'sweep'}"], timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {BAD_SETTINGS[setting]}"
    assert not (tmp_path / "sweep").exists()  # nothing ran, nothing was written


# --- failures ---------------------------------------------------------------------------------


def test_a_failing_trial_is_recorded_with_its_error_and_the_sweep_completes(tmp_path):
    args = [*OPTUNA, "hydra/sweeper/sampler=grid", "model.hidden_size=choice(0,8)"]
    out = run_cli(["-m", *TINY, *args, f"hydra.sweep.dir={tmp_path}"])
    assert out.returncode == 0, out.stderr[-3000:]
    trials = optuna.load_study(study_name="tiny", storage=storage_of(tmp_path)).get_trials()
    by_size = {t.params["model.hidden_size"]: t for t in trials}
    assert by_size[8].state == optuna.trial.TrialState.COMPLETE
    assert by_size[0].state == optuna.trial.TrialState.FAIL
    assert by_size[0].user_attrs["error"] == (
        "RnnlabError: invalid model config: model.hidden_size must be a positive integer, got 0"
    )
    rows = leaderboard(load_sweep(tmp_path))
    assert [r["status"] for r in rows] == ["COMPLETE", "FAIL"]


def test_a_sweep_fails_only_when_every_trial_fails(tmp_path):
    args = [*OPTUNA, "hydra.sweeper.n_trials=2", "model.hidden_size=choice(0,-1)"]
    out = run_cli(["-m", *TINY, *args, f"hydra.sweep.dir={tmp_path}"])
    assert out.returncode != 0
    assert (
        "every trial of the sweep failed; the last error: RnnlabError: invalid model" in out.stderr
    )


def test_a_trial_that_returns_nan_is_told_as_failed():
    sweeper = OptunaSweeperImpl(None, None, "minimize", "s", None, 1, 1, None, None)
    study = optuna.create_study()
    trial = study.ask()
    ret = JobReturn(status=JobStatus.COMPLETED, _return_value=float("nan"))
    state, error = sweeper.tell(study, trial, ret)
    assert state == optuna.trial.TrialState.FAIL
    assert study.trials[0].user_attrs["error"] == "the trial returned nan, not a finite number"


# --- the search-space syntax ------------------------------------------------------------------


def test_the_search_space_syntax_of_hydra_optuna_sweeper():
    params = {
        "model": "choice(rnn, lstm, gru)",
        "model.num_layers": "range(1, 3)",
        "optimizer.lr": "tag(log, interval(1e-4, 1e-1))",
        "model.dropout": "interval(0.0, 0.5)",
        "model.hidden_size": {"type": "int", "low": 16, "high": 128, "step": 16},
        "data.batch_size": {"type": "categorical", "choices": [32, 64]},
    }
    dists, fixed = search_space(params, ["trainer.max_epochs=3", "seed=choice(1,2)"])
    assert dists == {
        "model": CategoricalDistribution(["rnn", "lstm", "gru"]),
        "model.num_layers": IntDistribution(1, 3, step=1),
        "optimizer.lr": FloatDistribution(1e-4, 1e-1, log=True),
        "model.dropout": FloatDistribution(0.0, 0.5),
        "model.hidden_size": IntDistribution(16, 128, step=16),
        "data.batch_size": CategoricalDistribution([32, 64]),
        "seed": CategoricalDistribution([1, 2]),
    }
    assert fixed == {"trainer.max_epochs": "3"}


@pytest.mark.parametrize("preset", ["adding_optuna", "names_optuna"])
def test_the_presets_compose_into_a_search_space(preset):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins

    if preset == "names_optuna" and not (CONF_DIR / "data" / "names.yaml").is_file():
        pytest.skip("the names data config is not in this checkout")
    Plugins.instance()  # registers the sweeper's configs, as `python train.py` does
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={preset}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("RnnlabOptunaSweeper")
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.pruner._target_ == "optuna.pruners.MedianPruner"
    assert sweeper.study_name == preset and sweeper.storage is None
    dists, _ = search_space(dict(sweeper.params), [])
    assert dists["model"] == CategoricalDistribution(["rnn", "lstm", "gru"])
    assert dists["optimizer.lr"].log and "model.hidden_size" in dists


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.is_file() else []


@pytest.mark.slow  # about 70 s on 2 busy cores: three processes start
def test_a_killed_worker_is_reported_and_its_trial_fails_while_the_other_finishes(tmp_path):
    """n_jobs=2; worker 0 is killed in the middle of a trial. Worker 1 runs the rest and tells
    the dead trial FAIL once its heartbeat is 3 s old; the parent names the dead worker, exit 1."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    args = [*TINY, *OPTUNA, "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=3"]
    args += ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    args += ["hydra/sweeper/pruner=none", "optimizer.lr=tag(log, interval(1e-3, 1e-1))"]
    args += [
        "trainer.max_epochs=20",
        "callbacks.early_stopping=null",
        f"hydra.sweep.dir={tmp_path}",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.pop("HYDRA_FULL_ERROR", None)
    out, err = (tmp_path / "parent.out").open("w"), (tmp_path / "parent.err").open("w")
    parent = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *args],
        cwd=ROOT, env=env, stdout=out, stderr=err,
    )  # fmt: skip
    try:
        log0 = tmp_path / "worker_0.log"
        deadline = time.monotonic() + 180
        job = None
        while job is None or not (tmp_path / job / "train.log").is_file():
            assert parent.poll() is None, (tmp_path / "parent.err").read_text()[-3000:]
            assert time.monotonic() < deadline
            text = log0.read_text() if log0.is_file() else ""
            if "\t#" in text:
                job = text.split("\t#", 1)[1].split(" ", 1)[0]
            time.sleep(0.2)
        time.sleep(0.5)
        assert not (tmp_path / job / "metrics.json").exists()  # in the middle of its trial
        (worker,) = [
            pid for pid in children_of(parent.pid) if os.readlink(f"/proc/{pid}/fd/1") == str(log0)
        ]
        os.kill(worker, signal.SIGKILL)
        parent.wait(timeout=240)
    finally:
        if parent.poll() is None:
            parent.kill()
        out.close()
        err.close()
    stdout, stderr = (tmp_path / "parent.out").read_text(), (tmp_path / "parent.err").read_text()
    assert parent.returncode == 1
    assert "Traceback" not in stderr
    trials = optuna.load_study(study_name="tiny", storage=storage_of(tmp_path)).get_trials()
    assert all(t.state.is_finished() for t in trials)
    assert len(trials) in (3, 4)  # 4: both workers took the last trial at the same moment
    assert stderr.strip().splitlines()[-1] == (
        f"error: worker 0 died (killed by SIGKILL) (its log: {log0}); "
        f"the study 'tiny' holds {len(trials)} of 3 finished trials and the same command runs "
        "the rest"
    )
    states = [t.state for t in trials]
    assert trials[int(job)].state == optuna.trial.TrialState.FAIL
    assert trials[int(job)].user_attrs["error"] == "its process died: no heartbeat for over 3 s"
    assert states.count(optuna.trial.TrialState.COMPLETE) == len(trials) - 1
    assert "Sweep summary: " in stdout and "complete, 0 pruned, 1 failed" in stdout


@pytest.mark.slow
def test_n_jobs_runs_worker_processes_on_one_shared_study(tmp_path):
    args = [*OPTUNA, "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=3"]
    args += ["hydra.sweeper.sampler.seed=3", "optimizer.lr=tag(log,interval(1e-3,1e-1))"]
    out = run_cli(["-m", *TINY, *args, f"hydra.sweep.dir={tmp_path}"])
    assert out.returncode == 0, out.stderr[-3000:]
    trials = optuna.load_study(study_name="tiny", storage=storage_of(tmp_path)).get_trials()
    assert 3 <= len(trials) <= 4  # two workers may both start the last trial
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.params["optimizer.lr"] for t in trials}) == len(trials)
    for i in (0, 1):
        assert "Launching 1 jobs locally" in (tmp_path / f"worker_{i}.log").read_text()


def test_a_preset_s_pruner_settings_reach_only_the_pruners_that_take_them():
    from hydra_plugins.rnnlab_optuna_sweeper._impl import pruner_settings

    preset = {"n_startup_trials": 5, "n_warmup_steps": 2}
    median = pruner_settings({"_target_": "optuna.pruners.MedianPruner", **preset})
    assert median == {"_target_": "optuna.pruners.MedianPruner", **preset}
    none = pruner_settings({"_target_": "optuna.pruners.NopPruner", **preset})
    assert none == {"_target_": "optuna.pruners.NopPruner"}
    threshold = pruner_settings(
        {"_target_": "optuna.pruners.ThresholdPruner", "lower": None, "upper": 1.0, **preset}
    )
    assert threshold == {
        "_target_": "optuna.pruners.ThresholdPruner",
        "lower": None,
        "upper": 1.0,
        "n_warmup_steps": 2,
    }
