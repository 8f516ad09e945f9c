"""Checks of the composed config that run before anything is built or written."""

from __future__ import annotations

import math
import os
from typing import Any

from omegaconf import DictConfig

from rnnlab.config import RnnlabError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_number(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and value > 0


def _non_negative_number(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and value >= 0


# key -> (test, what the value must be); a key missing from the config is not checked
RULES: dict[str, tuple[Any, str]] = {
    "seed": (_is_int, "an integer"),
    "optimizer.lr": (_positive_number, "a positive number"),
    "optimizer.weight_decay": (_non_negative_number, "a non-negative number"),
    "optimizer.momentum": (_non_negative_number, "a non-negative number"),
    "trainer.max_epochs": (
        lambda v: v is None or (_is_int(v) and v >= -1),
        "an integer (-1 for no limit)",
    ),
    "trainer.min_epochs": (
        lambda v: v is None or (_is_int(v) and v >= 0),
        "a non-negative integer",
    ),
    "trainer.max_steps": (lambda v: _is_int(v) and v >= -1, "an integer (-1 for no limit)"),
    "trainer.log_every_n_steps": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "trainer.check_val_every_n_epoch": (
        lambda v: v is None or (_is_int(v) and v >= 1),
        "a positive integer",
    ),
    "trainer.gradient_clip_val": (
        lambda v: v is None or _non_negative_number(v),
        "a non-negative number or null",
    ),
    "trainer.accumulate_grad_batches": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "trainer.deterministic": (lambda v: isinstance(v, bool) or v == "warn", "true, false or warn"),
}


def _select(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def check_config(cfg: DictConfig) -> None:
    """Raise an RnnlabError naming the first impossible value among the checked keys."""
    for key, (test, must_be) in RULES.items():
        value = _select(cfg, key)
        if value is _MISSING:
            continue
        if not test(value):
            raise RnnlabError(f"{key} must be {must_be}, got {value!r}")
    policy = cfg.get("nan_policy", "stop")
    if policy not in ("stop", "skip"):
        raise RnnlabError(f"nan_policy must be stop or skip, got {policy!r}")
    check_devices(cfg)


def check_devices(cfg: DictConfig) -> None:
    """``trainer.devices`` must not ask for more devices than the machine has."""
    trainer = cfg.get("trainer") or {}
    devices = trainer.get("devices", 1)
    accelerator = str(trainer.get("accelerator", "auto"))
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
