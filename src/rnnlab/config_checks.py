"""Checks of the composed config that run before anything is built or written."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from rnnlab.errors import RnnlabError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """What one config value must be: ``test(value)`` holds, described as ``must_be``.

    ``only_for`` names the ``_target_`` classes of the value's group the rule applies to
    (empty: every one), so a key shared by several data sets can have a stricter rule for one.
    """

    test: Callable[[Any], bool]
    must_be: str
    only_for: tuple[str, ...] = ()

    def applies(self, target: Any) -> bool:
        return not self.only_for or str(target).rsplit(".", 1)[-1] in self.only_for

    def check(self, key: str, value: Any, prefix: str = "") -> None:
        """Raise an RnnlabError naming ``key`` when ``value`` breaks the rule."""
        if not self.test(value):
            raise RnnlabError(f"{prefix}{key} must be {self.must_be}, got {value!r}")


def _or_null(
    rule_test: Callable[[Any], bool], must_be: str, null: bool, given: str | None
) -> tuple[Any, str]:
    """The test and its words, null allowed too with ``null`` (``given`` words stay as given)."""
    if not null:
        return rule_test, given or must_be
    return (lambda v: v is None or rule_test(v)), given or f"{must_be} or null"


def integer(
    low: int | None = None,
    high: int | None = None,
    *,
    null: bool = False,
    must_be: str | None = None,
    only_for: tuple[str, ...] = (),
) -> Rule:
    """An integer (not a bool) in ``low..high``; ``null=True`` also allows null."""

    def test(v: Any) -> bool:
        return _is_int(v) and (low is None or v >= low) and (high is None or v <= high)

    if low is not None and high is not None:
        words = f"an integer from {low} to {high}"
    elif low == 1:
        words = "a positive integer"
    elif low == 0:
        words = "a non-negative integer"
    elif low is not None:
        words = f"an integer of at least {low}"
    else:
        words = "an integer"
    return Rule(*_or_null(test, words, null, must_be), only_for=only_for)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    null: bool = False,
    must_be: str | None = None,
    only_for: tuple[str, ...] = (),
) -> Rule:
    """A finite number in the interval from ``low`` to ``high`` (``*_open``: the end excluded)."""

    def test(v: Any) -> bool:
        if not _is_number(v) or not math.isfinite(v):
            return False
        if low is not None and (v <= low if low_open else v < low):
            return False
        return high is None or (v < high if high_open else v <= high)

    if low is not None and high is not None:
        words = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low == 0:
        words = "a positive number" if low_open else "a non-negative number"
    else:
        words = "a finite number"
    return Rule(*_or_null(test, words, null, must_be), only_for=only_for)


def require(name: str, value: Any, rule: Rule, error: type[Exception] = ValueError) -> Any:
    """``value`` when it keeps ``rule``, else ``error`` naming ``name``: the constructors' own
    check, a second line behind ``RULES``, in the same words."""
    if not rule.test(value):
        raise error(f"{name} must be {rule.must_be}, got {value!r}")
    return value


def one_of(*choices: Any, must_be: str | None = None, only_for: tuple[str, ...] = ()) -> Rule:
    """One of ``choices`` (compared with their types: true is not 1)."""

    def test(v: Any) -> bool:
        return any(type(v) is type(c) and v == c for c in choices)

    names = {True: "true", False: "false", None: "null"}
    shown = [names[c] if c is None or isinstance(c, bool) else c for c in choices]
    if must_be is None:
        must_be = (
            " or ".join(str(c) for c in shown)
            if len(shown) < 3
            else ("one of " + ", ".join(str(c) for c in shown))
        )
    return Rule(test, must_be, only_for)


BOOLEAN = one_of(True, False)
FRACTION = number(0, 1, high_open=True)  # [0, 1)
SHARE = number(0, 1, low_open=True, high_open=True)  # (0, 1)


def _val_check_interval(v: Any) -> bool:
    if v is None:
        return True
    if _is_int(v):
        return v >= 1
    return _is_number(v) and math.isfinite(v) and 0 < v <= 1


def _val_size(v: Any) -> bool:
    return (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v < 1)


def _limit_batches(v: Any) -> bool:
    if v is None or (_is_int(v) and v >= 0):
        return True
    return _is_number(v) and math.isfinite(v) and 0 <= v <= 1


# Every value rule the config declares, checked before torch or Lightning is imported (by
# ``python train.py``) and again when a run starts; the constructors keep their own checks.
# key -> a Rule or several (checked in order); a key missing from the config is not checked.
RULES: dict[str, Rule | tuple[Rule, ...]] = {
    "seed": integer(0, 2**32 - 1),
    "nan_policy": one_of("stop", "skip"),
    "nan_skip_limit": integer(1, null=True),
    "train": BOOLEAN,
    "test": BOOLEAN,
    "resume": BOOLEAN,
    "compile": BOOLEAN,
    "checkpoint_writes": one_of("background", "foreground"),
    "monitor.mode": one_of("min", "max", None, must_be="min or max (null: the task's own)"),
    "model.hidden_size": integer(1),
    "model.num_layers": integer(1),
    "model.embedding_dim": integer(1, null=True),
    "model.dropout": FRACTION,
    "model.bidirectional": BOOLEAN,
    "model.cell": (
        one_of("rnn", "lstm", "gru", only_for=("RecurrentNet", "UnrolledNet")),
        one_of("mingru", "minlstm", "indrnn", "lru", "s4d", only_for=("ModernNet",)),
    ),
    "model.nonlinearity": one_of("tanh", "relu"),
    "model.init": one_of("default", "normal", "orthogonal", "chrono", "identity"),
    "model.init_std": number(0, low_open=True),
    "model.chrono_tmax": number(2, null=True, must_be="a number of steps of at least 2, or null"),
    "model.forget_bias": number(null=True),
    "model.scan": one_of("parallel", "loop"),
    "model.scan_chunk": integer(1),
    "model.recurrent_bound": number(0, low_open=True),
    "model.bound_mode": one_of("clamp", "tanh"),
    "model.state_size": integer(1),
    "model.r_min": number(0, 1, high_open=True),
    "model.r_max": number(0, 1, high_open=True),
    "model.max_phase": number(0, low_open=True),
    "model.dt_min": number(0, low_open=True),
    "model.dt_max": number(0, low_open=True),
    "model.pack": one_of("auto", True, False),
    "data.batch_size": integer(1),
    "data.num_workers": integer(0),
    "data.n_train": integer(1),
    "data.n_val": integer(1),
    "data.n_test": integer(1),
    "data.seq_len": integer(1),
    "data.T": (
        integer(1),
        integer(2, must_be="at least 2 for the adding problem", only_for=("AddingDataModule",)),
    ),
    "data.copy_len": integer(1),
    "data.num_symbols": integer(1),
    "data.min_len": integer(1, null=True),
    "data.noise": number(0),
    "data.scale": number(),
    "data.val_fraction": SHARE,
    "data.test_fraction": (
        FRACTION,
        number(
            0, 1, low_open=True, high_open=True, only_for=("NamesDataModule", "DigitsDataModule")
        ),
    ),
    "data.rule": one_of("motif", "first_last", "majority", only_for=("PatternDataModule",)),
    "data.accents": one_of("keep", "fold", only_for=("NamesDataModule",)),
    "data.ambiguous": one_of("keep", "drop", only_for=("NamesDataModule",)),
    "data.duplicates": one_of("merge", "keep", only_for=("NamesDataModule",)),
    "data.split": one_of("lines", "names", only_for=("NamesDataModule",)),
    "data.balance": one_of("none", "weights", "sampler", only_for=("NamesDataModule",)),
    "data.balance_power": number(0, 1, low_open=True, only_for=("NamesDataModule",)),
    "data.bucket": BOOLEAN,
    "data.stateful": BOOLEAN,
    "data.mode": one_of("pixels", "rows", only_for=("MnistDataModule", "DigitsDataModule")),
    "data.permute": BOOLEAN,
    "data.permute_seed": integer(0, null=True),
    "data.val_size": Rule(_val_size, "a positive count of training images or a fraction in (0, 1)"),
    "task.label_smoothing": FRACTION,
    "callbacks.solve.budget_steps": integer(1),
    "callbacks.solve.every_n_steps": integer(1),
    "callbacks.solve.num_sequences": integer(1),
    "callbacks.solve.mse_below": number(0, low_open=True),
    "callbacks.solve.recall_at_least": number(0, 1, low_open=True),
    "optimizer.lr": number(0, low_open=True),
    "optimizer.weight_decay": number(0),
    "optimizer.momentum": number(0),
    "scheduler.factor": number(0, 1, low_open=True, high_open=True),
    "scheduler.patience": integer(0),
    "scheduler.T_max": integer(1),
    "trainer.max_epochs": integer(-1, null=True, must_be="an integer (-1 for no limit)"),
    "trainer.min_epochs": integer(0, null=True),
    "trainer.max_steps": integer(-1, must_be="an integer (-1 for no limit)"),
    "trainer.log_every_n_steps": integer(1),
    "trainer.check_val_every_n_epoch": integer(1, null=True),
    "trainer.val_check_interval": Rule(
        _val_check_interval,
        "a positive integer (training steps), a fraction in (0, 1] of an epoch, or null",
    ),
    "trainer.limit_train_batches": Rule(
        _limit_batches, "a count of batches or a fraction in [0, 1]"
    ),
    "trainer.limit_val_batches": Rule(_limit_batches, "a count of batches or a fraction in [0, 1]"),
    "trainer.limit_test_batches": Rule(
        _limit_batches, "a count of batches or a fraction in [0, 1]"
    ),
    "trainer.num_nodes": integer(1),
    "trainer.gradient_clip_val": number(0, null=True),
    "trainer.accumulate_grad_batches": integer(1),
    "trainer.deterministic": one_of(True, False, "warn", must_be="true, false or warn"),
    "trainer.enable_progress_bar": BOOLEAN,
    "trainer.enable_model_summary": BOOLEAN,
}


def _select(cfg: DictConfig, key: str) -> Any:
    """The value at ``key``, or ``_MISSING`` when there is none or it can not be resolved yet."""
    node: Any = cfg
    try:
        for part in key.split("."):
            if not isinstance(node, DictConfig) or part not in node:
                return _MISSING
            node = node[part]
    except OmegaConfBaseException:  # e.g. ${hydra:...} outside a Hydra job: checked later
        return _MISSING
    return node


_MISSING = object()


def check_values(cfg: DictConfig) -> None:
    """Raise an RnnlabError naming the first value that breaks a rule of ``RULES``, then check the
    rules that tie several values together. Needs neither torch nor Lightning."""
    for key, rules in RULES.items():
        value = _select(cfg, key)
        if value is _MISSING:
            continue
        group = key.split(".", 1)[0] if "." in key else ""
        target = _select(cfg, f"{group}._target_") if group else None
        # the words the model's and the data's constructors use for the same value
        prefix = f"invalid {group} config: " if group in ("model", "data") else ""
        for rule in rules if isinstance(rules, tuple) else (rules,):
            if rule.applies(target):
                rule.check(key, value, prefix)
    _check_together(cfg)


def _check_together(cfg: DictConfig) -> None:
    seq_len, min_len = _select(cfg, "data.seq_len"), _select(cfg, "data.min_len")
    if _is_int(seq_len) and _is_int(min_len) and min_len > seq_len:
        raise RnnlabError(
            f"invalid data config: data.min_len must be in 1..data.seq_len={seq_len}, got {min_len}"
        )
    if _select(cfg, "data.stateful") is True and _select(cfg, "model.bidirectional") is True:
        raise RnnlabError(
            "invalid model config: data.stateful=true carries the state forward, which a "
            "bidirectional net (model.bidirectional=true) can not do: set one of them to false"
        )
    power = _select(cfg, "data.balance_power")
    if _is_number(power) and power != 1 and _select(cfg, "data.balance") == "none":
        raise RnnlabError(
            f"invalid data config: data.balance_power={power} tempers data.balance=weights or "
            "sampler, and data.balance is none: set data.balance too"
        )
    fractions = [_select(cfg, f"data.{k}") for k in ("val_fraction", "test_fraction")]
    if all(_is_number(f) for f in fractions) and sum(fractions) >= 1:
        raise RnnlabError(
            "invalid data config: data.val_fraction + data.test_fraction must leave data to "
            "train on, got "
            f"{fractions[0]} + {fractions[1]}"
        )
    if (
        _select(cfg, "train") is False
        and _select(cfg, "ckpt_path") in (None, "", _MISSING)
        and _select(cfg, "resume") is not True
    ):
        raise RnnlabError(
            "train=false only tests a trained net: give ckpt_path=<checkpoint> "
            "(or resume=true with hydra.run.dir=<run>)"
        )
    run_dir = _select(cfg, "hydra.run.dir")
    if run_dir is None or (isinstance(run_dir, str) and not run_dir.strip()):
        raise RnnlabError(
            "hydra.run.dir is empty: name the run's folder, or leave the key out for "
            "outputs/<date>/<time>"
        )


def check_config(cfg: DictConfig, gpus: bool = True) -> None:
    """Raise an RnnlabError naming the first impossible value: every rule of ``RULES``, then the
    devices (``gpus=False``: leave out what only torch can count, so nothing heavy is imported)."""
    check_values(cfg)
    check_devices(cfg, gpus=gpus)


def check_devices(cfg: DictConfig, gpus: bool = True) -> None:
    """``trainer.devices`` must not ask for more devices than the machine has (``gpus=False``:
    what needs torch to count GPUs is left for later)."""
    devices = _select(cfg, "trainer.devices")
    accelerator = _select(cfg, "trainer.accelerator")
    if devices is _MISSING:
        devices = 1 if _select(cfg, "trainer") is not _MISSING else None
    accelerator = "auto" if accelerator is _MISSING else str(accelerator)
    if devices in (None, "auto", -1, "-1"):
        return
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, bool) or not isinstance(devices, int):
        if isinstance(devices, str) or not hasattr(devices, "__len__"):
            raise RnnlabError(
                f"trainer.devices must be a positive integer, a list of device ids or auto, "
                f"got {devices!r}"
            )
        return  # a list of device ids: Lightning checks each one
    if devices < 1:
        raise RnnlabError(f"trainer.devices must be a positive integer or auto, got {devices}")
    if not gpus and accelerator != "cpu":
        if accelerator != "auto" or _may_have_gpus():
            return
        accelerator = "cpu"  # auto on a machine without any GPU device
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and _cuda_count() > 0):
        available = _cuda_count()
        if available == 0:
            raise RnnlabError(f"trainer.accelerator={accelerator} but this machine has no GPU")
        if devices > available:
            raise RnnlabError(
                f"trainer.devices={devices} asks for more GPUs than this machine has ({available})"
            )
    elif accelerator in ("cpu", "auto"):
        cores = os.cpu_count() or 1
        if devices > cores:
            raise RnnlabError(
                f"trainer.devices={devices} asks for more CPU processes than this machine has "
                f"cores ({cores})"
            )


def _may_have_gpus() -> bool:
    """Whether this machine may have a GPU, told without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    dev = Path("/dev")
    return not dev.is_dir() or any(dev.glob("nvidia[0-9]*")) or (dev / "kfd").exists()


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_precision(precision: str, device_type: str, net: Any, dims: Any) -> None:
    """bf16 on CPU: run the net once on a tiny batch under autocast, so a processor without the
    kernels it needs (oneDNN has no bf16 LSTM on many CPUs) fails now, in one sentence, rather than
    with a low-level error at the first training step."""
    import torch

    if not str(precision).startswith("bf16") or device_type != "cpu":
        return
    if getattr(dims, "vocab_size", None) is not None:
        x = torch.ones(2, 3, dtype=torch.long)
    else:
        x = torch.zeros(2, 3, dims.input_size)
    lengths = torch.tensor([3, 2])
    was_training = net.training
    net.eval()  # no dropout: the probe draws no random numbers
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            net(x, lengths)
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[0].split(". ")[0].rstrip(".") or type(e).__name__
        cell = getattr(net, "cell", None)
        what = f"the {cell.upper()}" if isinstance(cell, str) else type(net).__name__
        raise RnnlabError(
            f"trainer.precision={precision} can not run {what} on this CPU ({reason}); "
            "use trainer.precision=32-true, or a GPU"
        ) from e
    finally:
        net.train(was_training)


def check_arguments(key: str, factory: Any) -> None:
    """A ``_partial_`` component (``optimizer``, ``scheduler``) must accept every option the
    config gives it, so a wrong one is named now rather than when training starts."""
    import functools
    import inspect

    if not isinstance(factory, functools.partial):
        return
    try:
        signature = inspect.signature(factory.func)
    except (TypeError, ValueError):  # a builtin without a signature: it checks when called
        return
    parameters = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [k for k in factory.keywords if k not in parameters]
    if not unknown:
        return
    name = getattr(factory.func, "__name__", str(factory.func))
    options = [
        n
        for n, p in parameters.items()
        if n not in ("self", "params", "optimizer")
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    hint = "; the scheduler follows monitor.metric" if unknown[0] == "monitor" else ""
    raise RnnlabError(
        f"{key}.{unknown[0]} is not an option of {name} (it takes {', '.join(options)}){hint}"
    )


def logged_metrics(task: Any) -> set[str]:
    """The epoch metrics a task logs in training and validation (what a monitor can follow)."""
    import copy
    import warnings

    names = {"train/loss_epoch", "val/loss"}
    for stage in ("train", "val"):
        for key, metric in task.stage_metrics(stage).items():
            name = f"{stage}/{key}" if key else stage
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # compute() before any update
                value = copy.deepcopy(metric).compute()
            for sub, v in value.items() if isinstance(value, dict) else [("", value)]:
                if getattr(v, "numel", lambda: 1)() == 1:
                    names.add(f"{name}/{sub}" if sub else name)
    return names


def check_monitor(task: Any, metric: str) -> None:
    """``monitor.metric`` must be a metric the task logs (a callback's own, outside train/ and
    val/, is left to the callback), so a misspelled one stops the run before training."""
    names = logged_metrics(task)
    if metric in names:
        return
    prefix = metric.split("/", 1)[0] if "/" in metric else ""
    if prefix and prefix not in ("train", "val", "test"):
        return
    choices = sorted(n for n in names if n.startswith("val/")) + ["train/loss_epoch"]
    raise RnnlabError(
        f"monitor.metric={metric} is not a metric this run logs; choose one of {', '.join(choices)}"
    )
