"""What only a CUDA device can check: cuDNN against the cells, mixed precision, compile, NCCL.

Every test here is marked ``gpu`` and skips without CUDA; ``scripts/gpu_check.sh`` runs them
(``pytest -m gpu tests/test_gpu.py``) and records each outcome in BENCHMARKS.md.
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from conftest import QUIET

from rnnlab.nets import RecurrentNet, UnrolledNet
from rnnlab.nets.unrolled import fused_to_cell_names
from rnnlab.train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def exact_float32():
    """TF32 off, so cuDNN and the cells compute in full float32 and can be compared closely."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_cudnn_fused_net_equals_the_cell_by_cell_net_on_cuda(cell, exact_float32):
    kwargs = dict(output_size=5, cell=cell, vocab_size=30, hidden_size=64, num_layers=2)
    torch.manual_seed(0)
    fused = RecurrentNet(**kwargs).cuda()
    cells = UnrolledNet(**kwargs).cuda().load_recurrent_(fused)
    x = torch.randint(1, 30, (16, 40), device="cuda")
    lengths = torch.randint(1, 41, (16,), device="cuda")
    lengths[0] = 40
    a, b = fused(x, lengths), cells(x, lengths)
    assert (a - b).abs().max().item() < 1e-4
    a.square().sum().backward()
    b.square().sum().backward()
    fused_grads = fused_to_cell_names({n: p.grad for n, p in fused.named_parameters()})
    cell_grads = {n: p.grad for n, p in cells.named_parameters()}
    assert set(fused_grads) == set(cell_grads)
    for name, grad in fused_grads.items():
        scale = grad.abs().max().item() + 1e-6
        assert (grad - cell_grads[name]).abs().max().item() / scale < 1e-3, name


class LossRecorder(L.Callback):
    """Every training step's loss, and the device and precision the run trained with."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.device = self.precision = self.backend = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        self.device = pl_module.device.type
        self.precision = trainer.precision
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.backend = torch.distributed.get_backend()


def train_adding(cfg_factory, *overrides: str, trainer: str = "gpu") -> tuple[dict, LossRecorder]:
    """A few epochs of the adding problem on the GPU; the metrics and every step's loss."""
    cfg = cfg_factory(
        f"trainer={trainer}",
        "data=adding",
        "data.T=30",
        "data.n_train=2048",
        "data.n_val=256",
        "data.n_test=256",
        "trainer.max_epochs=3",
        "logger=none",
        *QUIET,
        *overrides,
    )
    recorder = LossRecorder()
    return train(cfg, extra_callbacks=[recorder]), recorder


def assert_learns(recorder: LossRecorder, metrics: dict) -> None:
    losses = recorder.losses
    assert len(losses) >= 90 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first  # the adding problem starts near MSE 1 and falls below 0.17
    assert recorder.device == "cuda"
    assert math.isfinite(metrics["test/mse"]) and metrics["test/mse"] < 0.2


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training_steps_are_finite_and_the_loss_falls(cfg_factory, precision):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    metrics, recorder = train_adding(cfg_factory, f"trainer.precision={precision}")
    assert recorder.precision == precision
    assert_learns(recorder, metrics)


def test_compile_trains_on_the_gpu(cfg_factory):
    metrics, recorder = train_adding(cfg_factory, "compile=true")
    assert_learns(recorder, metrics)


def test_one_process_ddp_trains_over_nccl(cfg_factory):
    try:
        metrics, recorder = train_adding(cfg_factory, "trainer.devices=1", trainer="ddp")
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    assert recorder.backend == "nccl"
    assert_learns(recorder, metrics)
