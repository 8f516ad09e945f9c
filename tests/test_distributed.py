"""DDP from a single run and from inside a sweep (2 CPU processes over gloo), and the GPU presets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, make_cfg, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from rnnlab.config import CONF_DIR
from rnnlab.data import SineDataModule
from rnnlab.distributed import quote_override, worker_command
from rnnlab.review import event_dir
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

    events = EventAccumulator(str(event_dir(run))).Reload()
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
        "lstm-on-sine",  # TensorBoard's event files, in a folder named for the run
        "metrics.json",
        "run_info.json",
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


@pytest.mark.slow  # tests/test_defaults.py runs a DDP sweep with every default callback
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
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]  # one per trial
    assert not (tmp_path / "logs").exists()  # no worker made a run directory of its own
    assert result.stdout.count("Run directory:") == 2
    for num, hidden in (("0", 4), ("1", 6)):
        trial = sweep / num
        assert f"model.hidden_size={hidden}" in (trial / ".hydra" / "overrides.yaml").read_text()
        assert event_dir(trial).name == f"model.hidden_size={hidden}"
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


@pytest.mark.slow  # tests/test_defaults.py runs DDP on names with every default callback
def test_ddp_names_run_reduces_its_metrics_and_draws_the_confusion_matrix_once(tmp_path):
    # the confusion matrix is reduced over both processes with the other metrics, then drawn by
    # process 0 alone: no collective is left waiting on one process
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rnnlab.data.names import write_toy_names

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
        str(event_dir(tmp_path / "run")), size_guidance={"images": 0}
    ).Reload()
    assert len(events.Images("confusion_matrix/val")) == 2  # one per validation, from process 0


# ---------------------------------------------------------------- SIGTERM to rank 0, and resume

# 300 made-up names, 240 to train on: 15 global batches of 16 an epoch, each process taking 8
DDP_NAMES_STEPS = 15
DDP_NAMES = [
    "trainer=ddp_cpu",
    "experiment=names",
    "data.batch_size=16",
    "model.hidden_size=16",
    "model.embedding_dim=8",
    "trainer.deterministic=true",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=none",
]


def _session(sid: int) -> list[int]:
    """The processes still alive in session ``sid`` (a run started in a session of its own)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def sigterm_rank_zero(
    args: list[str], run: Path
) -> tuple[subprocess.CompletedProcess, float, list]:
    """Start a DDP run, send SIGTERM to rank 0 alone once its first epoch's last.ckpt exists;
    the finished process, the seconds from the signal to its exit and the processes it left."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={run}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a session of its own: the workers are found by it
    )
    try:
        last = run / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 240
        while not last.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.poll() is None, "the run ended before its first checkpoint"
        child.send_signal(signal.SIGTERM)  # the main process only, as some launchers do
        sent = time.monotonic()
        stdout, stderr = child.communicate(timeout=120)
        seconds = time.monotonic() - sent
        left = _session(child.pid)
    finally:
        if child.poll() is None or _session(child.pid):
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    result = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    return result, seconds, left


@pytest.fixture(scope="module")
def ddp_names(tmp_path_factory):
    from rnnlab.data.names import write_toy_names

    folder = write_toy_names(tmp_path_factory.mktemp("toy") / "names", per_language=150)
    return [*DDP_NAMES, f"data.data_dir={folder}"]


def test_sigterm_to_rank_zero_of_a_ddp_run_saves_and_exits_promptly(ddp_names, tmp_path):
    run = tmp_path / "run"
    result, seconds, left = sigterm_rank_zero([*ddp_names, "trainer.max_epochs=50"], run)
    assert result.returncode == 143, result.stderr[-3000:]
    assert seconds < 30  # SLURM's default KillWait before its SIGKILL
    assert left == []  # no worker outlives the run
    assert "Traceback" not in result.stderr
    assert result.stderr.count("error:") == 1  # said once, by rank 0
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "interrupted"
    step = record["global_step"]
    assert f"stopped by SIGTERM at step {step} " in result.stderr
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step


def reference_and_stopped(args: list[str], tmp_path: Path) -> tuple[Path, Path]:
    """The folders of two DDP runs of ``args``: one uninterrupted, one whose rank 0 got SIGTERM
    once its first epoch's last.ckpt existed (exit status 143)."""
    reference = tmp_path / "reference"
    result = run_cli([*args, f"hydra.run.dir={reference}"])
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    result, _, _ = sigterm_rank_zero(args, run)
    assert result.returncode == 143, result.stderr[-3000:]
    return reference, run


@pytest.mark.slow  # three DDP runs
def test_ddp_run_stopped_mid_epoch_then_resumed_equals_an_uninterrupted_run(ddp_names, tmp_path):
    args = [*ddp_names, "model.num_layers=2", "model.dropout=0.3", "trainer.max_epochs=3"]
    reference, run = reference_and_stopped(args, tmp_path)
    stopped_at = json.loads((run / "metrics.json").read_text())["global_step"]
    assert stopped_at % DDP_NAMES_STEPS != 0  # part-way through epoch 1
    result = run_cli([*args, f"hydra.run.dir={run}", "resume=true"])
    assert result.returncode == 0, result.stderr[-3000:]
    # every process skipped the batches it had served, and drew its own dropout masks again
    assert_same_run(reference, run)
    steps = json.loads((run / "metrics.json").read_text())["global_step"]
    assert steps == 3 * DDP_NAMES_STEPS > stopped_at


def assert_same_run(reference: Path, run: Path) -> None:
    """Two finished run folders hold the same run: steps, every val/test metric, and the last
    checkpoint's weights to the bit."""
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (reference, run))
    assert a["global_step"] == b["global_step"]
    keep = ("val/", "test/")
    assert {k: v for k, v in a["metrics"].items() if k.startswith(keep)} == {
        k: v for k, v in b["metrics"].items() if k.startswith(keep)
    }
    wa, wb = (
        torch.load(r / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
        for r in (reference, run)
    )
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) == 0.0
