"""Sweeps under review: read a sweep directory (grid or Optuna study) into a leaderboard.

``load_sweep(dir)`` gives one row per trial (overrides, metrics, status, time); ``aggregate``
folds ``seed`` repeats into mean and spread; ``write_summary`` writes CSV, Markdown and plots
into the sweep directory. ``scripts/summarize_sweep.py`` is the command line over these, and
``SweepSummary`` (a Hydra callback in ``conf/hydra/default.yaml``) prints the top of the
leaderboard when a sweep ends.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rnnlab.errors import RnnlabError


def monitor_mode(cfg: DictConfig) -> str:
    """``min`` or ``max``: ``monitor.mode`` if set, else the mode of the task the data implies."""
    mode = cfg.get("monitor", {}).get("mode")
    if mode:
        return str(mode)
    from hydra.utils import instantiate

    from rnnlab.tasks import default_monitor

    datamodule: Any = instantiate(cfg.data)
    try:
        dims = datamodule.dims
    except Exception:  # some datamodules know their dims only after reading the data
        datamodule.prepare_data()
        datamodule.setup("fit")
        dims = datamodule.dims
    return default_monitor(dims.task)[1]


STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
STATE_WORDS = {"FAIL": "failed"}  # how summary lines count a state; the others in lower case
WORKER_ENV = "RNNLAB_SWEEP_WORKERS_SINCE"  # set in the worker processes of a parallel Optuna sweep


@dataclass
class Trial:
    """One job of a sweep: its overrides, final metrics, status and time."""

    job: int
    path: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "COMPLETE"
    duration_s: float | None = None
    value: float | None = None  # what the trial returned to the sweeper (or the study's value)
    epochs: int | None = None
    error: str = ""


@dataclass
class Sweep:
    """A sweep directory read back: its trials, the monitored metric and the Optuna study if any."""

    path: Path
    trials: list[Trial]
    monitor: str | None = None
    mode: str = "min"
    study: Any = None  # an optuna.Study when the sweep was an Optuna study

    @property
    def objective(self) -> str:
        """The column trials are ranked by: the best value of the monitored metric."""
        return f"{self.monitor}_best" if self.monitor else "value"

    def swept_keys(self) -> list[str]:
        """The override keys whose value differs between trials (``seed`` included).

        A trial known only from the study (run from another sweep directory) has no value for the
        fixed keys; those do not count as differing."""
        keys: list[str] = []
        for trial in self.trials:
            for key in trial.overrides:
                if key not in keys:
                    keys.append(key)
        return [
            k
            for k in keys
            if len({repr(t.overrides[k]) for t in self.trials if k in t.overrides}) > 1
        ]


def parse_value(text: str) -> Any:
    """An override's value as YAML reads it: ``64`` -> 64, ``3e-3`` -> 0.003, ``gru`` -> 'gru'."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 3e-3 as a string
        except ValueError:
            return value
    return value if isinstance(value, (int, float, bool)) or value is None else text


def parse_overrides(lines: list[str]) -> dict[str, Any]:
    """``key=value`` overrides as a dict, without ``+``/``++`` and the sweeper's ``optuna.*`` keys."""
    out: dict[str, Any] = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        key = key.lstrip("+~")
        if not sep or key.startswith("optuna.") or key == "hparams_search":
            continue
        out[key] = parse_value(value.strip("'\""))
    return out


def last_error(log_file: Path) -> str:
    """The last ERROR line a run logged, without its timestamp."""
    if not log_file.is_file():
        return ""
    lines = [ln for ln in log_file.read_text(errors="replace").splitlines() if "[ERROR]" in ln]
    return lines[-1].split("] - ", 1)[-1].strip() if lines else ""


def read_job(path: Path) -> Trial:
    """A job directory (``<sweep>/<n>/``) read back from its overrides, metrics.json and log."""
    overrides_file = path / ".hydra" / "overrides.yaml"
    lines = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    trial = Trial(job=int(path.name), path=path, overrides=parse_overrides(lines or []))
    record_file = path / "metrics.json"
    if record_file.is_file():
        record = json.loads(record_file.read_text())
        trial.metrics = {k: float(v) for k, v in record.get("metrics", {}).items()}
        trial.duration_s = record.get("duration_s")
        trial.epochs = record.get("epochs")
        trial.status = "COMPLETE"
    else:
        trial.status = "FAIL"
        trial.error = last_error(path / "train.log")
    return trial


def find_storage(trials: list[Path]) -> tuple[str, str] | None:
    """The study name and storage URL the sweeper gave its trials, read from their overrides."""
    for path in trials:
        overrides_file = path / ".hydra" / "overrides.yaml"
        if not overrides_file.is_file():
            continue
        found = {}
        for line in yaml.safe_load(overrides_file.read_text()) or []:
            key, _, value = str(line).partition("=")
            if key.lstrip("+") in ("optuna.study_name", "optuna.storage"):
                found[key.lstrip("+")] = value.strip("'\"")
        if len(found) == 2:
            return found["optuna.study_name"], found["optuna.storage"]
    return None


def load_sweep(
    path: str | Path, storage: str | None = None, study_name: str | None = None
) -> Sweep:
    """Read a sweep directory: every job, plus the Optuna study when the sweep ran one."""
    path = Path(path)
    if not path.is_dir():
        raise RnnlabError(f"no sweep directory at {path}")
    job_dirs = sorted((p for p in path.iterdir() if p.is_dir() and p.name.isdigit()), key=_num)
    trials = {int(p.name): read_job(p) for p in job_dirs}
    sweep = Sweep(path=path, trials=[])
    for trial in trials.values():
        record_file = trial.path / "metrics.json" if trial.path else None
        if record_file is not None and record_file.is_file():
            record = json.loads(record_file.read_text())
            sweep.monitor = sweep.monitor or record.get("monitor")
            sweep.mode = record.get("mode") or sweep.mode
    if storage is None and study_name is None:
        found = find_storage(job_dirs)
        if found is None and (path / "optuna.db").is_file():
            found = (None, f"sqlite:///{(path / 'optuna.db').absolute()}")
        if found is not None:
            study_name, storage = found
    if storage is not None:
        import optuna

        from hydra_plugins.rnnlab_optuna_sweeper._impl import normalize_url

        storage = normalize_url(storage)

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if study_name is None:
            names = optuna.get_all_study_names(storage)
            if len(names) != 1:
                raise RnnlabError(f"{storage} holds studies {names}: name one with --study")
            study_name = names[0]
        sweep.study = optuna.load_study(study_name=study_name, storage=storage)
        sweep.mode = "max" if sweep.study.direction.name == "MAXIMIZE" else "min"
        for frozen in sweep.study.get_trials(deepcopy=False):
            trial = trials.setdefault(frozen.number, Trial(job=frozen.number, path=None))
            merge_study_trial(trial, frozen)
    sweep.trials = [trials[k] for k in sorted(trials)]
    if not sweep.trials:
        raise RnnlabError(f"{path} holds no trials (numbered job directories or an Optuna study)")
    return sweep


def _num(path: Path) -> int:
    return int(path.name)


def merge_study_trial(trial: Trial, frozen: Any) -> None:
    """Complete a job's row with what the study knows: state, value, params, time, error."""
    trial.status = frozen.state.name
    trial.value = frozen.value
    for key, value in frozen.params.items():
        trial.overrides.setdefault(key, value)
    if frozen.datetime_start and frozen.datetime_complete:
        trial.duration_s = (frozen.datetime_complete - frozen.datetime_start).total_seconds()
    if frozen.intermediate_values and trial.epochs is None:
        trial.epochs = max(frozen.intermediate_values) + 1  # steps are 0-based epochs
    if trial.status == "PRUNED" and frozen.intermediate_values:
        trial.error = f"pruned after epoch {max(frozen.intermediate_values) + 1}"
    if trial.status == "FAIL":
        trial.error = str(frozen.user_attrs.get("error", trial.error))


def objective_value(sweep: Sweep, trial: Trial) -> float | None:
    """The value a trial is ranked by: its best monitored metric, else what it returned."""
    value = trial.metrics.get(sweep.objective)
    if value is None:
        value = trial.value
    return None if value is None or not math.isfinite(value) else float(value)


def leaderboard(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial, best first: job, swept overrides, metrics, status, time, error."""
    keys = sweep.swept_keys()
    metric_keys = metric_columns(sweep)
    rows = []
    for trial in sweep.trials:
        row: dict[str, Any] = {"job": trial.job}
        row.update({k: trial.overrides.get(k) for k in keys})
        row[sweep.objective] = objective_value(sweep, trial)
        row.update({k: trial.metrics.get(k) for k in metric_keys if k != sweep.objective})
        row.update(
            {
                "status": trial.status,
                "epochs": trial.epochs,
                "time_s": None if trial.duration_s is None else round(trial.duration_s, 1),
                "error": trial.error,
            }
        )
        rows.append(row)
    return sorted(rows, key=lambda r: rank_key(sweep, r[sweep.objective], r["status"]))


def rank_key(sweep: Sweep, value: float | None, status: str) -> tuple:
    """Completed trials first, best value first; then pruned, then failed."""
    order = {"COMPLETE": 0, "PRUNED": 1}.get(status, 2)
    if value is None:
        return (order, 1, 0.0)
    return (order, 0, -value if sweep.mode == "max" else value)


def metric_columns(sweep: Sweep) -> list[str]:
    """The objective and the test metrics, the columns worth comparing trials by."""
    names = [sweep.objective]
    for trial in sweep.trials:
        for key in trial.metrics:
            if key.startswith("test/") and not key.endswith("loss") and key not in names:
                names.append(key)
    return names


def aggregate(sweep: Sweep, over: str = "seed") -> list[dict[str, Any]]:
    """Rows that differ only in ``over`` folded into one: mean, std (n-1) and count per metric."""
    keys = [k for k in sweep.swept_keys() if k != over]
    metric_keys = metric_columns(sweep)
    groups: dict[tuple, list[Trial]] = {}
    for trial in sweep.trials:
        if trial.status != "COMPLETE":
            continue
        groups.setdefault(tuple(repr(trial.overrides.get(k)) for k in keys), []).append(trial)
    rows = []
    for members in groups.values():
        row: dict[str, Any] = {k: members[0].overrides.get(k) for k in keys}
        row["n"] = len(members)
        for metric in metric_keys:
            values = [
                objective_value(sweep, t) if metric == sweep.objective else t.metrics.get(metric)
                for t in members
            ]
            values = [v for v in values if v is not None]
            row[f"{metric} mean"] = statistics.fmean(values) if values else None
            row[f"{metric} std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    mean_key = f"{sweep.objective} mean"
    return sorted(rows, key=lambda r: rank_key(sweep, r[mean_key], "COMPLETE"))


def format_cell(value: Any) -> str:
    """A table cell: floats with 4 significant digits, None as blank."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as a Markdown table."""
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append(
            "| " + " | ".join(format_cell(row[k]).replace("|", "/") for k in header) + " |"
        )
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Rows as CSV (full precision)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def sweep_figure(sweep: Sweep) -> Any:
    """The objective against each swept value, one panel per key (a matplotlib Figure); None if
    nothing was swept. Integer values get integer ticks; "orange = pruned" only when a trial was."""
    keys = sweep.swept_keys()
    points = [(t, objective_value(sweep, t)) for t in sweep.trials]
    points = [(t, v) for t, v in points if v is not None]
    if not keys or not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    colors = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange"}
    for ax, key in zip(axes[0], keys, strict=True):
        shown = [(t, v) for t, v in points if key in t.overrides]
        values = [t.overrides[key] for t, _ in shown]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric and values:
            xs = [float(v) for v in values]
            positive = all(x > 0 for x in xs)
            if positive and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
            elif all(isinstance(v, int) for v in values):  # seed, hidden_size: no 1.5 ticks
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            labels = sorted({str(v) for v in values})
            xs = [labels.index(str(v)) for v in values]
            ax.set_xticks(range(len(labels)), labels)
        ax.scatter(xs, [v for _, v in shown], c=[colors.get(t.status, "tab:red") for t, _ in shown])
        ax.set_xlabel(key)
        ax.set_ylabel(sweep.objective)
    title = f"{sweep.path.name}: {sweep.objective} ({sweep.mode})"
    if any(t.status == "PRUNED" for t, _ in points):
        title += "; orange = pruned"
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_sweep(sweep: Sweep, path: Path) -> Path | None:
    """``sweep_figure`` written to ``path``; None if nothing was swept."""
    fig = sweep_figure(sweep)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_history(sweep: Sweep, path: Path) -> Path | None:
    """Optuna's optimization history of the study, if the sweep has one with a finished trial."""
    if sweep.study is None:
        return None
    from optuna.trial import TrialState

    if not sweep.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    ax = optuna.visualization.matplotlib.plot_optimization_history(
        sweep.study, target_name=sweep.objective
    )
    ax.figure.set_size_inches(7, 4)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=100)
    plt.close(ax.figure)
    return path


def write_summary(sweep: Sweep, out_dir: Path | None = None) -> dict[str, Path]:
    """Write leaderboard.csv/.md, seeds.csv (when seeds repeat) and the plots; return the paths."""
    out_dir = Path(out_dir or sweep.path)
    rows = leaderboard(sweep)
    written = {"csv": out_dir / "leaderboard.csv", "markdown": out_dir / "leaderboard.md"}
    write_csv(rows, written["csv"])
    text = f"# {sweep.path.name}\n\n{summary_line(sweep)}\n\n{markdown_table(rows)}"
    grouped = aggregate(sweep) if "seed" in sweep.swept_keys() else []
    if grouped:
        written["seeds_csv"] = out_dir / "seeds.csv"
        write_csv(grouped, written["seeds_csv"])
        text += f"\n## Mean and std over seeds\n\n{markdown_table(grouped)}"
    written["markdown"].write_text(text)
    for name, plot in (("plot", plot_sweep), ("history", plot_history)):
        target = out_dir / ("sweep.png" if name == "plot" else "optimization_history.png")
        if plot(sweep, target) is not None:
            written[name] = target
    return written


def summary_line(sweep: Sweep) -> str:
    """``6 trials (grid): 4 complete, 1 pruned, 1 failed; ranked by val/mse_best (min)``."""
    counts = {s: sum(t.status == s for t in sweep.trials) for s in STATES}
    always = ("COMPLETE", "PRUNED", "FAIL")
    parts = [f"{n} {STATE_WORDS.get(s, s.lower())}" for s, n in counts.items() if n or s in always]
    kind = f"Optuna study {sweep.study.study_name!r}" if sweep.study is not None else "grid"
    return (
        f"{len(sweep.trials)} trials ({kind}): {', '.join(parts)}; "
        f"ranked by {sweep.objective} ({sweep.mode})"
    )


TOP_ROWS = 5  # leaderboard rows printed when a sweep ends


def print_summary(sweep_dir: str | Path, top: int = TOP_ROWS, file: Any = None) -> str:
    """Write the sweep's summary files and print the top of its leaderboard, the counts of
    complete, pruned and failed trials, and where the full leaderboard and the plots are."""
    file = file or sys.stdout
    try:
        sweep = load_sweep(sweep_dir)
        written = write_summary(sweep)
    except Exception as e:  # noqa: BLE001  (the sweep itself is done; its summary is a bonus)
        text = f"No sweep summary for {sweep_dir}: {e}"
        print(text, file=file, flush=True)
        return text
    rows = leaderboard(sweep)
    shown = [
        {k: (v[:60] if k == "error" and isinstance(v, str) else v) for k, v in row.items()}
        for row in rows[:top]
    ]
    if not any(row.get("error") for row in shown):
        shown = [{k: v for k, v in row.items() if k != "error"} for row in shown]
    lines = [f"Sweep summary: {summary_line(sweep)}", "", markdown_table(shown).rstrip("\n")]
    if len(rows) > top:
        lines.append(f"... and {len(rows) - top} more")
    lines.append("")
    lines.append(f"Full leaderboard: {written['markdown']} (and {written['csv'].name})")
    plots = [str(written[k]) for k in ("plot", "history") if k in written]
    if plots:
        lines.append(f"Plots: {', '.join(plots)}")
    if "seeds_csv" in written:
        lines.append(f"Mean and std over seeds: {written['seeds_csv']}")
    text = "\n".join(lines)
    print(text, file=file, flush=True)
    return text


class SweepSummary(Callback):
    """Hydra callback: when a sweep (grid or Optuna) ends, print and write its summary.

    The worker processes of a parallel Optuna sweep leave it to the process that started them.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get(WORKER_ENV):
            return
        print_summary(config.hydra.sweep.dir)
