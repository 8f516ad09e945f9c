"""The vanishing-gradient study: final error and gradient flow against sequence length T.

``python train.py experiment=vanishing`` trains rnn, lstm and gru on adding and copy at growing T
with the gradient-flow callback on; at the end of the sweep ``VanishingReport`` reads every
job's ``metrics.json`` and ``.hydra/`` files and writes ``vanishing.png`` and ``vanishing.md``
into the sweep directory. ``python scripts/vanishing_report.py <sweep dir>`` does it again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from rnnlab.errors import RnnlabError

ERROR_KEYS = ("mse", "loss")  # the test metric a task's trivial baseline is given for


@dataclass(frozen=True)
class StudyRun:
    """One job of the sweep: which model on which task at which T, and how it ended."""

    model: str
    task: str
    T: int
    error: float  # test metric / trivial baseline: 1 is no better than trivial, 0 is solved
    metric: str
    value: float
    baseline: float
    log10_ratio: float | None  # final log10(||dL/dh_1|| / ||dL/dh_T||)


def _overrides(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = OmegaConf.to_container(OmegaConf.load(path)) or []
    return dict(item.lstrip("+~").split("=", 1) for item in items if "=" in item)


def job_choices(job: Path) -> dict[str, str]:
    """A job's config-group choices (``model``, ``data`` ...): its overrides over Hydra's record."""
    choices: dict[str, str] = {}
    hydra_path = job / ".hydra" / "hydra.yaml"
    if hydra_path.is_file():
        recorded = OmegaConf.load(hydra_path).hydra.runtime.choices
        choices = {str(k): str(v) for k, v in recorded.items() if v is not None}
    return {**choices, **_overrides(job)}


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """The job directories of a sweep, in name order; an RnnlabError if there is no sweep."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise RnnlabError(f"no sweep directory at {sweep_dir}")
    return [job for job in sorted(sweep_dir.iterdir()) if job.is_dir()]


def read_run(job: Path) -> StudyRun | None:
    """A job directory's run, or None if it has no metrics or no task with a baseline."""
    metrics_path = job / "metrics.json"
    config_path = job / ".hydra" / "config.yaml"
    if not metrics_path.is_file() or not config_path.is_file():
        return None
    metrics = json.loads(metrics_path.read_text())["metrics"]
    config = OmegaConf.load(config_path)
    choices = job_choices(job)
    model = choices.get("model") or str(config.model.get("cell"))
    task = choices.get("data")
    if "T" not in config.data or task is None:
        return None
    from hydra.utils import instantiate

    baselines = getattr(instantiate(config.data), "baselines", {})
    for key in ERROR_KEYS:
        if key in baselines and f"test/{key}" in metrics:
            value, baseline = metrics[f"test/{key}"], baselines[key]
            ratio = metrics.get("grad_flow/log10_ratio")
            return StudyRun(
                model=model,
                task=task,
                T=int(config.data.T),
                error=value / baseline,
                metric=f"test/{key}",
                value=value,
                baseline=baseline,
                log10_ratio=None if ratio is None else float(ratio),
            )
    return None


def collect(sweep_dir: str | Path) -> list[StudyRun]:
    """Every finished job under a sweep directory, sorted by task, model and T."""
    runs = [run for job in job_dirs(sweep_dir) if (run := read_run(job))]
    if not runs:
        raise RnnlabError(f"no finished runs with a metrics.json and a T under {sweep_dir}")
    return sorted(runs, key=lambda r: (r.task, r.model, r.T))


MODEL_STYLE = {
    "rnn": ("tab:red", "o"),
    "lstm": ("tab:blue", "s"),
    "gru": ("tab:green", "^"),
}


def plot(runs: list[StudyRun], path: Path) -> None:
    """Final error / baseline against T per model for each task, and the gradient-flow ratios."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    tasks = sorted({r.task for r in runs})
    models = sorted({r.model for r in runs}, key=lambda m: (m not in MODEL_STYLE, m))
    fig = Figure(figsize=(4.2 * (len(tasks) + 1), 3.6), dpi=90)
    axes = fig.subplots(1, len(tasks) + 1, squeeze=False)[0]

    def draw(ax, task: str, model: str, value: str, **style) -> None:
        sel = [r for r in runs if r.task == task and r.model == model]
        sel = [r for r in sel if getattr(r, value) is not None]
        if sel:
            color, marker = MODEL_STYLE.get(model, (None, "x"))
            ys = [getattr(r, value) for r in sel]
            ax.plot([r.T for r in sel], ys, marker=marker, color=color, **style)

    for ax, task in zip(axes, tasks, strict=False):
        for model in models:
            draw(ax, task, model, "error", label=model)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8, label="trivial baseline")
        metric = next(r.metric for r in runs if r.task == task)
        ax.set_title(f"{task}: final {metric} / baseline", fontsize=10)
        ax.set_xlabel("sequence length T")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    ax = axes[-1]
    for model in models:
        for task, linestyle in zip(tasks, ["-", ":", "-.", "--"] * len(tasks), strict=False):
            draw(
                ax,
                task,
                model,
                "log10_ratio",
                linestyle=linestyle,
                label=f"{model} ({task})",
            )
    ax.set_title("gradient flow: log10 ||dL/dh_1|| / ||dL/dh_T||", fontsize=10)
    ax.set_xlabel("sequence length T")
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.05, right=0.99, top=0.9, bottom=0.14, wspace=0.25)
    fig.savefig(path)


def table(runs: list[StudyRun]) -> str:
    """The study's numbers as a Markdown table."""
    lines = [
        "| task | model | T | test metric | value | baseline | error / baseline | log10 grad ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        ratio = "" if r.log10_ratio is None else f"{r.log10_ratio:.1f}"
        lines.append(
            f"| {r.task} | {r.model} | {r.T} | {r.metric} | {r.value:.4f} | {r.baseline:.4f} "
            f"| {r.error:.3f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def report(sweep_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write ``vanishing.png`` (or ``output``) and ``vanishing.md`` for a sweep; return the PNG path."""
    runs = collect(sweep_dir)
    path = Path(output) if output else Path(sweep_dir) / "vanishing.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot(runs, path)
    path.with_suffix(".md").write_text(table(runs))
    return path


class VanishingReport(Callback):
    """Hydra callback: after the multirun, write the study's picture and table to the sweep dir."""

    def on_multirun_end(self, config, **kwargs) -> None:
        log = logging.getLogger("rnnlab")
        try:
            path = report(config.hydra.sweep.dir)
        except RnnlabError as e:
            log.error("vanishing report: %s", e)
            return
        log.info(
            "Vanishing-gradient study: %s\n%s",
            path,
            path.with_suffix(".md").read_text(),
        )
