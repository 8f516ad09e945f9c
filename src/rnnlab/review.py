"""What TensorBoard shows to compare runs: run names, the HParams table, the comparison columns.

- Run names. TensorBoard names a run by the path of its event files below ``--logdir``. Event files
  go to ``<run dir>/<what the run is>/``: ``lstm-on-adding`` (or the experiment's name) for one
  run, the trial's swept overrides (``model=gru,seed=2``) in a sweep. So ``tensorboard --logdir
  outputs`` lists ``2026-11-29/18-45-05/lstm-on-adding`` and
  ``multirun/2026-11-29/18-45-06/3/model=gru,seed=2``.
- One HParams table for every run. Every run registers the same two metric columns first,
  ``hparams/best`` (the best value of the monitored metric) and ``hparams/test`` (the test value
  of the best checkpoint), then its own monitored metrics, so a table over all of ``outputs/``
  has a value in every row whatever the task.
- The columns shown by default. TensorBoard shows the first five hyperparameters after sorting
  them by ``differs`` (true first), then by name. A sweep lists its swept keys (marked as
  differing), then the model/data/optimizer essentials, and leaves its constants out of the
  table. One run marks the essentials, and every other key of its config stays available in the
  table's column chooser.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

BEST_TAG = "hparams/best"
TEST_TAG = "hparams/test"
SHOWN = 5  # hyperparameter columns TensorBoard's HParams table shows before the user picks more
GROUPS = ("experiment", "data", "model", "optimizer", "scheduler")
# said first about any run, in this order, after what a sweep varies
ESSENTIALS = ("data", "model", "model.hidden_size", "model.num_layers", "optimizer.lr", "seed")


def choices(cfg: DictConfig) -> dict[str, str]:
    """The config group options the run was composed from (``model: gru``, ``data: names``).

    Read from Hydra where a run goes through it; otherwise (a config composed in code) told from
    the components' classes.
    """
    out: dict[str, str] = {}
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            runtime = HydraConfig.get().runtime.choices
            out = {g: str(runtime[g]) for g in GROUPS if runtime.get(g) not in (None, "null")}
    except (ValueError, KeyError, AttributeError):
        out = {}
    for group, suffix in (("data", "DataModule"), ("model", ""), ("optimizer", "")):
        node = cfg.get(group)
        if group in out or not node or not node.get("_target_"):
            continue
        name = str(node._target_).rsplit(".", 1)[-1]
        if group == "model" and node.get("cell"):
            name = str(node.cell)
        out[group] = name.removesuffix(suffix).lower() if suffix else name.lower()
    return out


def _short(value: str) -> str:
    """A number as a label shows it: 0.0012345678 reads 0.001235."""
    try:
        number = float(value)
    except ValueError:
        return value
    if re.fullmatch(r"[+-]?\d+", value.strip()):
        return value.strip()
    return f"{number:.4g}"


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _sweep_specs() -> tuple[list[str], set[str]]:
    """The sweep's own arguments (its command line, from ``multirun.yaml``) and the keys of the
    sweeper's ``params`` (a preset's search space)."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    specs: list[str] = []
    saved = Path(str(hydra.sweep.dir)) / "multirun.yaml"
    if saved.is_file():
        try:
            specs = [str(o) for o in OmegaConf.load(saved).hydra.overrides.task]
        except Exception:  # an unreadable file: fall back on the command line
            specs = []
    if not specs:
        specs = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    params = dict(OmegaConf.select(hydra, "sweeper.params") or {})
    return specs + [f"{k}={v}" for k, v in params.items()], {str(k) for k in params}


def swept_keys() -> list[str]:
    """The keys a Hydra sweep varies (``model``, ``seed``, ``optimizer.lr``), in command-line order.

    Empty outside a sweep.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return []
        specs, searched = _sweep_specs()
    except (ValueError, KeyError, AttributeError):
        return []
    parser = OverridesParser.create()
    keys: list[str] = []
    for spec in specs:
        key = _key(spec)
        if key.startswith("hydra.") or key in keys:
            continue
        try:
            (override,) = parser.parse_overrides([spec])
            varies = override.is_sweep_override()
        except Exception:  # a sweeper's own syntax: a search space
            varies = True
        if varies or key in searched:
            keys.append(key)
    return keys


def _job_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return [str(o) for o in HydraConfig.get().overrides.task]


def run_label(cfg: DictConfig) -> str:
    """What the run is, as a folder name: the swept overrides in a sweep, else
    the experiment's name or ``<model>-on-<data>``."""
    label = ""
    keys = swept_keys()
    if keys:
        values = {}
        for override in _job_overrides():
            key = _key(override)
            if key in keys and "=" in override:
                values[key] = _short(override.split("=", 1)[1])
        label = ",".join(f"{k}={values[k]}" for k in keys if k in values)
    if not label:
        picked = choices(cfg)
        if picked.get("experiment"):
            label = picked["experiment"]
        else:
            label = f"{picked.get('model', 'model')}-on-{picked.get('data', 'data')}"
    label = re.sub(r"[/\\\s]+", "_", label).strip("._") or "run"
    return label[:120]


def event_dir(run_dir: str | Path) -> Path:
    """The folder that holds a run's TensorBoard event files (``<run dir>/<what the run is>/``)."""
    run_dir = Path(run_dir)
    found = sorted(
        {p.parent for p in run_dir.glob("*/events.out.tfevents.*")}, key=lambda p: p.stat().st_mtime
    )
    if not found:
        raise FileNotFoundError(f"no TensorBoard event files in a folder of {run_dir}")
    return found[0]


def name_event_folders(loggers: list, cfg: DictConfig) -> None:
    """Give each TensorBoard logger without a version the folder ``<run dir>/<run label>/``.

    A run that already has event files there (a resumed run) keeps its folder, so its curves go on
    in the same TensorBoard run.
    """
    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger) or logger._version is not None:
            continue
        try:
            label = event_dir(logger.root_dir).name
        except FileNotFoundError:
            label = run_label(cfg)
        logger._version = label


def shown_first(hparams: dict[str, Any], swept: list[str]) -> list[str]:
    """The hyperparameters the HParams table shows by default: swept keys, then essentials."""
    shown = [k for k in swept if k in hparams]
    for key in ESSENTIALS:
        if len(shown) >= SHOWN:
            break
        if key in hparams and key not in shown:
            shown.append(key)
    return shown[:SHOWN]


def run_place(cfg: DictConfig) -> str:
    """Where the run is: its directory below ``paths.log_dir`` (``2026-11-29/18-45-05``)."""
    output_dir = Path(str(cfg.paths.output_dir)).absolute()
    try:
        place = output_dir.relative_to(Path(str(cfg.paths.log_dir)).absolute())
    except ValueError:
        return str(output_dir)
    return str(place) if str(place) != "." else output_dir.name


def trial_name(label: str, place: str) -> str:
    """The HParams table's Trial ID: what the run is, then where it lies.

    A sweep's label gives only its values (``gru,2``): the table shows the swept keys in the next
    columns, and the ID column shows about fifteen characters before it cuts.
    """
    parts = label.split(",")
    if all("=" in part for part in parts):
        label = ",".join(part.split("=", 1)[1] for part in parts)
    return f"{label} @ {place}"


def hparams_summaries(
    hparams: dict[str, Any], metrics: list[str], swept: list[str], trial: str = ""
) -> tuple[Any, Any, Any]:
    """The HParams plugin's experiment, session-start and session-end summaries.

    ``metrics`` are the run's own metric tags; the comparison columns come before them. The
    hyperparameters in ``shown_first`` are marked ``differs`` so TensorBoard shows them by default.
    ``trial`` names the row in the table's "Trial ID" column (by default the run's path), so that
    what the run is comes first (``trial_name``).
    """
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    columns = [BEST_TAG, TEST_TAG, *(m for m in metrics if m not in (BEST_TAG, TEST_TAG))]
    exp, ssi, sei = hparams_summary(hparams, dict.fromkeys(columns, 0.0))
    value = exp.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    infos = sorted(data.experiment.hparam_infos, key=lambda i: i.name)
    if swept:  # the swept keys, then the essentials: TensorBoard sorts each part by name
        infos = [i for i in infos if i.name in swept or i.name in ESSENTIALS]
        for info in infos:
            info.differs = info.name in swept
    else:
        shown = shown_first(hparams, swept)
        for info in infos:
            info.differs = info.name in shown
    data.experiment.ClearField("hparam_infos")
    data.experiment.hparam_infos.extend(infos)
    names = {BEST_TAG: "best (monitored metric)", TEST_TAG: "test (best checkpoint)"}
    data.experiment.ClearField("metric_infos")
    for tag in columns:
        data.experiment.metric_infos.append(
            api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=names.get(tag, ""))
        )
    value.metadata.plugin_data.content = data.SerializeToString()
    if trial:
        start = ssi.value[0].metadata.plugin_data
        data = plugin_data_pb2.HParamsPluginData.FromString(start.content)
        data.session_start_info.group_name = trial
        start.content = data.SerializeToString()
    return exp, ssi, sei


def review_hparams(cfg: DictConfig, flat: dict[str, Any]) -> dict[str, Any]:
    """The flattened config plus the group options it was composed from (``model: gru``)."""
    picked = choices(cfg)
    return {**{g: picked[g] for g in GROUPS if g in picked}, **flat}


def continue_event_files(loggers: list, step: int | None) -> None:
    """On resume, hide TensorBoard points at or after ``step`` that a killed run had logged."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if step is None:
        return
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger._kwargs["purge_step"] = step  # passed on to SummaryWriter(purge_step=...)


def tensorboard_writer(trainer: L.Trainer):
    """The run's TensorBoard ``SummaryWriter`` on global rank zero, else None."""
    if not trainer.is_global_zero:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None
