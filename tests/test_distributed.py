"""DDP from a single run and from inside a sweep (2 CPU processes over gloo), and the GPU presets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import make_cfg, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from rnnlab.config import CONF_DIR
from rnnlab.data import SineDataModule
from rnnlab.distributed import quote_override, worker_command
from rnnlab.train import train

QUIET = [
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
]
# 256 samples in global batches of 16: 16 steps an epoch; each of 2 processes takes 8 a step
TINY_SINE = [
    "data=sine",
    "data.seq_len=20",
    "data.n_train=256",
    "data.n_val=64",
    "data.n_test=64",
    "data.batch_size=16",
    "model.hidden_size=8",
    "optimizer.lr=0.01",
    "trainer.max_epochs=2",
]


def _replace(overrides: list[str], *new: str) -> list[str]:
    """``overrides`` with the keys of ``new`` set to their new values."""
    keys = {n.split("=", 1)[0] for n in new}
    return [o for o in overrides if o.split("=", 1)[0] not in keys] + list(new)


def _scalars(run: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    return [s.value for s in events.Scalars(tag)]


def test_ddp_cpu_run_writes_one_run_directory_and_equals_one_process(tmp_path):
    result = run_cli(["trainer=ddp_cpu", *TINY_SINE, *QUIET, f"paths.log_dir={tmp_path / 'ddp'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p for p in (tmp_path / "ddp").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs  # the worker joined the run's directory, made none of its own
    run = runs[0]
    assert sorted(p.name for p in run.iterdir()) == [
        ".hydra",
        "checkpoints",
        "metrics.json",
        "run_info.json",
        "tensorboard",
        "train.log",
    ]
    # rank zero alone prints and logs
    assert result.stdout.count("Run directory:") == 1
    log = (run / "train.log").read_text()
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log
    assert "GLOBAL_RANK: 1" not in log and log.count("Run directory:") == 1

    record = json.loads((run / "metrics.json").read_text())
    ddp = record["metrics"]
    assert record["global_step"] == 32  # 2 epochs of 256 / 16: batch_size is the global batch
    dm = SineDataModule(seq_len=20, n_train=256, n_val=64, n_test=64, seed=42)
    dm.setup()
    predict_zero = float((dm.splits["test"].tensors["y"] ** 2).mean())  # ~0.5
    assert ddp["test/mse"] < 0.25 * predict_zero

    # one process, same global batch and seed: the same numbers
    single = train(make_cfg(["trainer=cpu", *TINY_SINE, *QUIET], tmp_path / "single"))
    assert set(single) == set(ddp)
    for key, value in single.items():
        assert ddp[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    # the step losses are the mean over both processes: the curve one process draws
    ddp_steps = _scalars(run, "train/loss_step")
    assert len(ddp_steps) == 32
    assert ddp_steps == pytest.approx(_scalars(tmp_path / "single", "train/loss_step"), rel=1e-5)


def test_sweep_of_ddp_trials_runs_each_trial_once_with_its_own_workers(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        [
            "-m",
            "trainer=ddp_cpu",
            *_replace(
                TINY_SINE, "model.hidden_size=4,6", "trainer.max_epochs=1", "data.n_train=64"
            ),
            *QUIET,
            f"paths.log_dir={tmp_path / 'logs'}",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    assert not (tmp_path / "logs").exists()  # no worker made a run directory of its own
    assert result.stdout.count("Run directory:") == 2
    for num, hidden in (("0", 4), ("1", 6)):
        trial = sweep / num
        assert f"model.hidden_size={hidden}" in (trial / ".hydra" / "overrides.yaml").read_text()
        assert list((trial / "tensorboard").glob("events.out.tfevents.*"))
        record = json.loads((trial / "metrics.json").read_text())
        assert record["global_step"] == 4  # 64 samples in global batches of 16
        assert record["metrics"]["test/mse"] > 0
        ckpt = torch.load(trial / "checkpoints" / "best.ckpt", weights_only=False)
        assert ckpt["rnnlab"]["config"]["model"]["hidden_size"] == hidden
        log = (trial / "train.log").read_text()
        assert log.count("GLOBAL_RANK: 0, MEMBER: 1/2") == 1 and "GLOBAL_RANK: 1" not in log


def test_a_worker_restarts_its_own_job_not_the_sweep(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["model.hidden_size=6", "trainer=ddp_cpu"], return_hydra_config=True)
    out = tmp_path / "it's a sweep" / "1"
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.config_name = "train"
        cfg.hydra.overrides.hydra = [
            "hydra.mode=MULTIRUN",
            "hydra.sweep.dir=/somewhere",
            "hydra/launcher=basic",
            "hydra.verbose=true",
        ]
    HydraConfig.instance().set_config(cfg)
    try:
        command, cwd = worker_command(1)
    finally:
        HydraConfig.instance().cfg = None
    assert cwd == str(tmp_path)
    assert command[0] == sys.executable
    assert command[command.index("--config-name=train") :] == [
        "--config-name=train",
        "model.hidden_size=6",
        "trainer=ddp_cpu",
        "hydra.verbose=true",
        "hydra.mode=RUN",
        f"hydra.run.dir={quote_override(str(out))}",
        "hydra.output_subdir=null",
    ]
    assert "--multirun" not in command and "-m" not in command[3:]


@pytest.mark.parametrize("path", ["/runs/a b/it's", "C:\\runs\\x\\", "/runs/${oops}/0"])
def test_run_dir_survives_the_override_grammar(path):
    (parsed,) = OverridesParser.create().parse_overrides([f"hydra.run.dir={quote_override(path)}"])
    assert OmegaConf.create({"dir": parsed.value()}).dir == path  # as the config will hold it


def test_batch_size_is_global_and_ranks_share_each_global_batch():
    dm = SineDataModule(seq_len=5, n_train=96, n_val=8, n_test=8, batch_size=32, seed=3)
    dm.setup()

    def batches(world: int, rank: int, epoch: int) -> list[torch.Tensor]:
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [b["x"] for b in loader]

    for epoch in (0, 1):
        single = batches(1, 0, epoch)
        rank0, rank1 = batches(2, 0, epoch), batches(2, 1, epoch)
        assert [len(b) for b in single] == [32, 32, 32]
        assert [len(b) for b in rank0] == [16, 16, 16] == [len(b) for b in rank1]
        for whole, a, b in zip(single, rank0, rank1, strict=True):
            rows = {tuple(r.flatten().tolist()) for r in whole}
            assert rows == {tuple(r.flatten().tolist()) for r in torch.cat([a, b])}
    assert not torch.equal(batches(1, 0, 0)[0], batches(1, 0, 1)[0])  # reshuffled each epoch
    dm.trainer, dm.batch_size = SimpleNamespace(world_size=2, global_rank=0), 33
    with pytest.raises(ValueError, match="data.batch_size=33 is the global batch and must divide"):
        dm.per_device_batch_size()


def _compose(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer=gpu"], {"accelerator": "gpu", "devices": 1}),
        (
            ["trainer=ddp"],
            {"accelerator": "gpu", "devices": "auto", "strategy": "ddp", "num_nodes": 1},
        ),
        (
            ["trainer=ddp", "trainer.num_nodes=4", "trainer.precision=bf16-mixed"],
            {"strategy": "ddp", "num_nodes": 4, "precision": "bf16-mixed"},
        ),
        (["trainer=gpu", "trainer.precision=16-mixed"], {"precision": "16-mixed"}),
        (
            ["trainer=ddp_cpu"],
            {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "num_nodes": 1},
        ),
    ],
)
def test_gpu_and_multi_gpu_presets_compose(overrides, expected, tmp_path):
    cfg = make_cfg(overrides, tmp_path)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert {k: trainer[k] for k in expected} == expected
    assert trainer["_target_"] == "lightning.pytorch.trainer.Trainer"
    assert trainer["default_root_dir"] == str(tmp_path)


def test_slurm_launcher_sets_the_world_of_each_trial():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose(
        "hydra/launcher=slurm",
        "trainer=slurm",
        "hydra.launcher.gpus_per_node=8",
        "hydra.launcher.nodes=2",
        "hydra.launcher.partition=gpu",
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["gpus_per_node"], launcher["tasks_per_node"], launcher["nodes"]) == (8, 8, 2)
    assert launcher["partition"] == "gpu"
    HydraConfig.instance().set_config(cfg)
    try:
        assert cfg.trainer.devices == 8 and cfg.trainer.num_nodes == 2
        assert cfg.trainer.strategy == "ddp" and cfg.trainer.accelerator == "gpu"
    finally:
        HydraConfig.instance().cfg = None


def test_ddp_names_run_reduces_its_metrics_and_draws_the_confusion_matrix_once(tmp_path):
    # the confusion matrix is reduced over both processes with the other metrics, then drawn by
    # process 0 alone: no collective is left waiting on one process
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rnnlab.benchmarks_names import write_toy_names

    folder = write_toy_names(tmp_path / "toy", per_language=80)
    result = run_cli(
        [
            "trainer=ddp_cpu",
            "data=names",
            f"data.data_dir={folder}",
            "data.batch_size=16",
            "model=gru",
            "model.hidden_size=16",
            "optimizer.lr=0.01",
            "trainer.max_epochs=2",
            *QUIET,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    for key in ("test/acc", "test/f1_macro", "test/balanced_acc", "val/acc_best"):
        assert 0.0 <= metrics[key] <= 1.0, key
    events = EventAccumulator(
        str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0}
    ).Reload()
    assert len(events.Images("val/confusion_matrix")) == 2  # one per validation, from process 0
