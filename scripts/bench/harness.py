"""Measurements behind `scripts/benchmark.py`: rnnlab against plain PyTorch on the same work.

Each measurement returns seconds; the script alternates the contenders, repeats, and reports
medians and ratios from one process run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from rnnlab.config import ROOT
from rnnlab.data.base import Dims, RnnlabDataModule, TensorBatches
from rnnlab.nets import RecurrentNet


class AverageDataModule(RnnlabDataModule):
    """Lightning's own RNN parity task: 10 features per step, 5 targets per step.

    The target is ``top + roll(bottom)`` of the two feature halves (Lightning's AverageDataset).
    """

    def __init__(
        self,
        n_train: int = 300,
        n_val: int = 60,
        seq_len: int = 100,
        batch_size: int = 30,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.n_train, self.n_val, self.seq_len = n_train, n_val, seq_len

    @property
    def dims(self) -> Dims:
        return Dims(task="regression", target="sequence", output_size=5, input_size=10)

    @staticmethod
    def make(n: int, seq_len: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        x = torch.randn(n, seq_len, 10, generator=g)
        top, bottom = x.chunk(2, -1)
        return {"x": x, "y": top + bottom.roll(shifts=1, dims=-1)}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        g = torch.Generator().manual_seed(self.seed)
        self.splits["train"] = TensorBatches(**self.make(self.n_train, self.seq_len, g))
        self.splits["val"] = TensorBatches(**self.make(self.n_val, self.seq_len, g))
        self.splits["test"] = self.splits["val"]


class Stopwatch(L.Callback):
    """Wall time of ``trainer.fit``'s loop (training and validation, no set-up or test)."""

    def __init__(self) -> None:
        self.start = self.end = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.end - self.start


def plain_loop(
    net: nn.Module,
    data: dict[str, dict[str, torch.Tensor]],
    epochs: int,
    batch_size: int,
    lr: float,
    loss_fn: Callable,
    seed: int = 0,
    validate: bool = True,
) -> tuple[float, int]:
    """A hand-written training loop: shuffle, step, validate each epoch. Returns (seconds, steps)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    train, val = data["train"], data["val"]
    n = len(train["x"])
    steps = 0
    start = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(n).split(batch_size):
            loss = loss_fn(net(train["x"][idx], None), train["y"][idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        if validate:
            net.eval()
            with torch.no_grad():
                total = 0.0
                for idx in torch.arange(len(val["x"])).split(batch_size):
                    total += float(loss_fn(net(val["x"][idx], None), val["y"][idx])) * len(idx)
    return time.perf_counter() - start, steps


def compose_run(overrides: list[str], output_dir: Path, **replace) -> DictConfig:
    """``train.yaml`` composed with ``overrides`` as ``python train.py`` would, writing to
    ``output_dir``; ``replace`` sets whole top-level nodes (``data={...}``) afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from rnnlab.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        for key, value in replace.items():
            cfg[key] = value
    return cfg


class StockParity(L.LightningModule):
    """Lightning's parity module as a user would write it: MSE loss, Adam, optional ``self.log``."""

    def __init__(self, lr: float = 0.02, log_every_step: bool = True) -> None:
        super().__init__()
        self.net = parity_net()
        self.lr, self.log_every_step = lr, log_every_step

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = nn.functional.mse_loss(self.net(batch["x"], None), batch["y"])
        if self.log_every_step:
            self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = nn.functional.mse_loss(self.net(batch["x"], None), batch["y"])
        if self.log_every_step:
            self.log("val_loss", loss, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def stock_lightning_seconds(
    out: Path, epochs: int, n_train: int, extras_on: bool
) -> tuple[float, int]:
    """Stock Lightning on the parity task: ``extras_on`` keeps its default logger, progress bar and
    checkpointing and logs every step; otherwise all are off. Returns (seconds, steps)."""
    watch = Stopwatch()
    kwargs: dict = {}
    if not extras_on:
        kwargs = dict(
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[watch],
        **kwargs,
    )
    trainer.fit(StockParity(log_every_step=extras_on), datamodule=AverageDataModule(n_train))
    return watch.seconds, epochs * -(-n_train // 30)


def forward_backward_seconds(
    net: nn.Module, x: torch.Tensor, lengths: torch.Tensor | None, repeats: int = 5
) -> float:
    """Median seconds of one forward+backward pass of ``net`` on a batch."""
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        out = net(x, lengths)
        out.float().pow(2).mean().backward()
        if i:  # the first pass warms up
            times.append(time.perf_counter() - start)
        net.zero_grad(set_to_none=True)
    return statistics.median(times)


def train_step_seconds(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool = False, repeats: int = 5
) -> float:
    """Median seconds of one classification training step (forward, backward, Adam)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(net(x, None).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def command_seconds(args: list[str], repeats: int = 3, env: dict | None = None) -> float:
    """Median wall seconds of a command run from the project root."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, cwd=ROOT, capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def parity_net(seed: int = 0) -> RecurrentNet:
    """Lightning's parity model: LSTM 10 -> 20 and Linear 20 -> 5 at every step."""
    torch.manual_seed(seed)
    return RecurrentNet(
        output_size=5, cell="lstm", input_size=10, hidden_size=20, output_mode="sequence"
    )


def project_path(*parts: str) -> Path:
    return ROOT.joinpath(*parts)
