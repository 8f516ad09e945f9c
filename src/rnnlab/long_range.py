"""The long-range study: training steps and seconds to solve adding and copy at growing T.

``python train.py experiment=long_range`` trains every model variant (``conf/variant/``) on every
problem (``conf/problem/``: adding at T = 100..1000, copy at T = 100..500) with the solve check
(``rnnlab.callbacks.solve``) on, each run within its budget of training steps. At the end of the
sweep ``LongRangeReport`` reads every job's ``metrics.json`` and ``.hydra/`` files and writes
``long_range.md`` (the table, with published figures beside ours) and ``long_range.png`` (steps to
solve against T per variant, unsolved runs marked at their budget) into the sweep directory.
``python scripts/long_range_report.py <sweep dir>`` does it again.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from rnnlab.errors import RnnlabError
from rnnlab.vanishing import job_choices, job_dirs

# the order of the table's rows and the plot's legend; a variant not listed comes after them
VARIANTS = (
    "rnn",
    "rnn_identity",
    "lstm",
    "lstm_chrono",
    "gru",
    "mingru",
    "minlstm",
    "indrnn",
    "lru",
    "s4d",
)
NOT_SOLVED = "not within budget"

# Published training sequences to solve, checked against the papers: (variant, task, T) -> figure
PUBLISHED: dict[tuple[str, str, int], tuple[int, str]] = {
    ("lstm", "adding", 100): (74_000, "Hochreiter & Schmidhuber 1997, Table 7"),
    ("lstm", "adding", 500): (209_000, "Hochreiter & Schmidhuber 1997, Table 7"),
    ("lstm", "adding", 1000): (853_000, "Hochreiter & Schmidhuber 1997, Table 7"),
}


@dataclass(frozen=True)
class SolveRun:
    """One job of the study: a variant on a task at T, and whether and when it solved it."""

    variant: str
    task: str
    T: int
    solved: bool
    budget_steps: int
    steps: int | None  # training steps to solve (None: not within budget)
    sequences: int | None
    seconds: float | None
    value: float | None  # the criterion at the last check: MSE (adding), recalled right (copy)
    status: str = "completed"  # metrics.json's status: how the run ended (nan_loss: a NaN loss)
    global_step: int | None = None


def read_run(job: Path) -> SolveRun | None:
    """A job directory's run, or None if it has no metrics.json with the solve check's record."""
    metrics_path = job / "metrics.json"
    config_path = job / ".hydra" / "config.yaml"
    if not metrics_path.is_file() or not config_path.is_file():
        return None
    record = json.loads(metrics_path.read_text())
    metrics = record["metrics"]
    if "solve/solved" not in metrics:
        return None
    config = OmegaConf.load(config_path)
    choices = job_choices(job)
    variant = choices.get("variant") or choices.get("model") or str(config.model.get("cell"))
    # AddingDataModule -> adding, where Hydra's record of the data choice is missing
    task = choices.get("data") or str(config.data._target_).rsplit(".", 1)[-1]
    task = task.removesuffix("DataModule").lower()
    solved = bool(metrics["solve/solved"])

    def whole(key: str) -> int | None:
        return int(metrics[key]) if solved and key in metrics else None

    return SolveRun(
        variant=variant,
        task=task,
        T=int(config.data.T),
        solved=solved,
        budget_steps=int(metrics["solve/budget_steps"]),
        steps=whole("solve/steps"),
        sequences=whole("solve/sequences"),
        seconds=float(metrics["solve/seconds"]) if solved else None,
        value=metrics.get("solve/value"),
        status=str(record.get("status", "completed")),
        global_step=record.get("global_step"),
    )


def _order(variant: str) -> tuple[int, str]:
    return (VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS), variant)


def collect(sweep_dir: str | Path, *more: str | Path) -> list[SolveRun]:
    """Every finished job under one or more sweep directories, sorted by variant, task and T.

    Where two sweeps ran the same variant, task and T, the later directory's run is kept.
    """
    found: dict[tuple[str, str, int], SolveRun] = {}
    for folder in (sweep_dir, *more):
        jobs = [run for job in job_dirs(folder) if (run := read_run(job))]
        if not jobs:
            raise RnnlabError(f"no finished runs with the solve check's record under {folder}")
        found.update({(r.variant, r.task, r.T): r for r in jobs})
    return sorted(found.values(), key=lambda r: (_order(r.variant), r.task, r.T))


def cell(run: SolveRun | None) -> str:
    """One table cell: steps (sequences, seconds), or why there is no number."""
    if run is None:
        return "not run"
    if not run.solved and run.status != "completed":
        return f"stopped: {run.status} at step {run.global_step}"
    value = "" if run.value is None else f"; last check {run.value:.3g}"
    if not run.solved and run.global_step is not None and run.global_step < run.budget_steps:
        return f"not solved in {run.global_step} steps (budget {run.budget_steps}{value})"
    if not run.solved:
        return f"{NOT_SOLVED} ({run.budget_steps} steps{value})"
    return f"{run.steps} ({run.sequences:,} seq, {run.seconds:.0f} s)"


def table(runs: list[SolveRun]) -> str:
    """The study as a Markdown table: a row per variant, a column per task and T."""
    columns = sorted({(r.task, r.T) for r in runs})
    variants = sorted({r.variant for r in runs}, key=_order)
    found = {(r.variant, r.task, r.T): r for r in runs}
    head = " | ".join(f"{task} T={T}" for task, T in columns)
    lines = [f"| variant | {head} |", "|---" * (len(columns) + 1) + "|"]
    for variant in variants:
        cells = " | ".join(cell(found.get((variant, task, T))) for task, T in columns)
        lines.append(f"| {variant} | {cells} |")
    sources: dict[tuple[str, str], dict[tuple[str, int], int]] = {}
    for (variant, task, T), (sequences, source) in PUBLISHED.items():
        if (task, T) in columns and variant in variants:
            sources.setdefault((variant, source), {})[(task, T)] = sequences
    for (variant, source), figures in sources.items():
        cells = " | ".join(f"{figures[col]:,} seq" if col in figures else "" for col in columns)
        lines.append(f"| {variant}, published ({source}) | {cells} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[SolveRun], path: Path) -> None:
    """Training steps to solve against T per variant, a panel per task; unsolved runs are drawn
    as open markers at their budget, joined by the grey budget line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    tasks = sorted({r.task for r in runs})
    variants = sorted({r.variant for r in runs}, key=_order)
    fig = Figure(figsize=(5.2 * len(tasks), 4.2), dpi=90)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    markers = "osD^v<>phX*"
    colors = [f"C{i}" for i in range(10)]
    for ax, task in zip(axes, tasks, strict=False):
        budget = sorted({(r.T, r.budget_steps) for r in runs if r.task == task})
        ax.plot(*zip(*budget, strict=False), color="grey", linestyle="--", label="budget")
        for i, variant in enumerate(variants):
            sel = [r for r in runs if r.task == task and r.variant == variant]
            style = {"color": colors[i % 10], "marker": markers[i % len(markers)]}
            shift = 1 + 0.025 * (i - (len(variants) - 1) / 2)  # side by side, not on top
            solved = [r for r in sel if r.solved]
            if solved:
                ax.plot(
                    [r.T * shift for r in solved], [r.steps for r in solved], label=variant, **style
                )
            unsolved = [r for r in sel if not r.solved]
            if unsolved:
                ax.plot(
                    [r.T * shift for r in unsolved],
                    [r.budget_steps for r in unsolved],
                    linestyle="none",
                    markerfacecolor="none",
                    label=None if solved else f"{variant} (not solved)",
                    **style,
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([T for T, _ in budget], [str(T) for T, _ in budget])
        ax.minorticks_off()
        steps = [r.steps or r.budget_steps for r in runs if r.task == task]
        ticks = [
            t
            for t in (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
            if min(steps) / 2 <= t <= max(steps) * 2
        ]
        ax.set_yticks(ticks, [str(t) for t in ticks])
        ax.set_title(f"{task}: training steps to solve (open: not within budget)", fontsize=9)
        ax.set_xlabel("T")
        ax.set_ylabel("training steps")
        ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.08, right=0.99, top=0.92, bottom=0.12, wspace=0.22)
    fig.savefig(path)


def report(sweep_dir: str | Path, output: str | Path | None = None, more: tuple = ()) -> Path:
    """Write ``long_range.png`` (or ``output``) and ``long_range.md`` for a sweep (and the runs of
    the ``more`` sweeps beside it); return the PNG path."""
    runs = collect(sweep_dir, *more)
    path = Path(output) if output else Path(sweep_dir) / "long_range.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot(runs, path)
    path.with_suffix(".md").write_text(table(runs))
    return path


class LongRangeReport(Callback):
    """Hydra callback: after the multirun, write the study's table and picture to the sweep dir.

    Before it, the values every job shares are checked, so an impossible one (a budget of 0
    steps) is one sentence and exit status 2 instead of as many failed jobs.
    """

    def on_multirun_start(self, config, **kwargs) -> None:
        from rnnlab.config_checks import check_values

        try:
            check_values(config)
        except RnnlabError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config, **kwargs) -> None:
        log = logging.getLogger("rnnlab")
        try:
            path = report(config.hydra.sweep.dir)
        except RnnlabError as e:
            log.error("long-range report: %s", e)
            return
        log.info("Long-range study: %s\n%s", path, path.with_suffix(".md").read_text())
