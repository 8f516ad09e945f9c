"""Every command README.md prints is run as printed.

The test collects the shell commands in README.md's code blocks that run ``python train.py`` or
``python scripts/...`` and runs each one through bash, exactly as written, appending only size
limits (one epoch, a few batches, a couple of trials) and, for training, a temporary output folder.
Placeholders such as ``outputs/<date>/<time>/...`` are filled from the output of an earlier command
of the README. Commands that can not run on this machine (GPUs, several nodes, SLURM, the network)
are listed in ``CANNOT_RUN_HERE`` with the reason and reported as skipped with it. A command added
to the README and neither run nor listed fails ``test_every_readme_command_is_run_or_listed``.

Commands run two at a time, each group in its own working folder that links ``train.py`` and
``scripts/`` (commands that share files, such as a run and its resume, share a group and run in
order). The longest ones are marked slow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from rnnlab.config import ROOT

README = ROOT / "README.md"
PYTHON_COMMAND = re.compile(r"^python (train\.py|scripts/)")

# what a training command gets appended: one short epoch, a tmp output folder (set per group)
EPOCH = [
    "trainer.max_epochs=1",
    "trainer.min_epochs=1",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=2",
    "++trainer.limit_test_batches=2",
]
TWO_TRIALS = ["hydra.sweeper.n_trials=2"]


# --- reading the README -----------------------------------------------------------------------


def strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` outside quotes after white space)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def is_python_command(segment: str) -> bool:
    """Whether ``segment`` (env assignments allowed in front) runs train.py or a script."""
    words = segment.split()
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    return bool(words) and bool(PYTHON_COMMAND.match(" ".join(words)))


def commands_in(markdown: str) -> list[str]:
    """The ``python train.py`` / ``python scripts/`` commands of the bash code blocks, in order.

    Continued lines are joined, comments dropped, and each part of an ``a && b`` chain counts on
    its own (``pip install -e . && python train.py`` gives ``python train.py``).
    """
    commands: list[str] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", markdown, flags=re.S | re.M):
        if lang not in ("bash", "sh", "shell"):
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            for segment in strip_comment(line.strip()).split("&&"):
                segment = " ".join(segment.split())
                if is_python_command(segment) and segment not in commands:
                    commands.append(segment)
    return commands


# --- what to do with each command -------------------------------------------------------------


@dataclass
class Run:
    """Run the command as written with ``limits`` appended.

    ``group`` names a working folder shared with other commands (run in README order);
    ``fill`` maps placeholder text to ``(command, path)``: ``path`` is taken inside the run (or
    sweep) directory that ``command`` made, ``{run}`` standing for that directory.
    ``needs_data`` skips the command when the shared data sets are absent.
    """

    limits: list[str] = field(default_factory=lambda: list(EPOCH))
    group: str | None = None
    fill: dict[str, tuple[str, str]] = field(default_factory=dict)
    needs_data: bool = False
    slow: bool = False
    files: dict[str, str] = field(default_factory=dict)  # name -> how to make it (see make_file)
    needs_path: str | None = None  # skipped, saying so, where this file or folder is absent
    output: str | None = None  # a string the command must print


@dataclass
class Skip:
    reason: str


NO_GPU = (
    "needs CUDA GPUs (trainer=ddp runs NCCL, one process per GPU); CPU DDP runs as trainer=ddp_cpu"
)
NO_NODES = "needs two machines that reach each other (MASTER_ADDR=node0)"
NO_SLURM = "needs a SLURM cluster to submit to (sbatch)"
NO_NETWORK = "downloads from the internet, which this machine can not reach"

# Commands that can not run on a CPU machine without network, with the reason.
CANNOT_RUN_HERE: dict[str, str] = {
    "python train.py trainer=ddp": NO_GPU,
    "python train.py trainer=ddp trainer.devices=2 trainer.precision=bf16-mixed data.batch_size=256": NO_GPU,
    "python train.py -m trainer=ddp model=lstm,gru model.hidden_size=128,256": NO_GPU,
    "MASTER_ADDR=node0 MASTER_PORT=29500 NODE_RANK=0 python train.py trainer=ddp trainer.num_nodes=2 hydra.run.dir=/shared/runs/exp1": NO_NODES,
    "python train.py -m hydra/launcher=slurm trainer=slurm hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=4 hydra.launcher.nodes=2 hydra.launcher.timeout_min=120 data.batch_size=512 model=lstm,gru model.hidden_size=128,256": NO_SLURM,
    "python scripts/fetch_names.py": NO_NETWORK,
    "python train.py experiment=names data.data_dir=data/names": "needs data/names, which "
    "scripts/fetch_names.py downloads (the same recipe runs on the shared copy above)",
    "python scripts/fetch_mnist.py": NO_NETWORK,
    "python train.py experiment=smnist": "needs data/mnist, which scripts/fetch_mnist.py "
    "downloads (the same recipe runs on Fashion-MNIST above)",
    "python train.py experiment=pmnist": "needs data/mnist, which scripts/fetch_mnist.py "
    "downloads (tests/test_images.py trains on permuted IDX images it writes)",
    "python scripts/gpu_check.py --merge outputs/gpu_check/results.json": "needs the results of "
    "scripts/gpu_check.sh on a CUDA GPU (tests/test_gpu_check.py merges made-up results)",
}

GRID_SEEDS = "python train.py -m model=lstm,gru seed=1,2,3"
PARITY = "python train.py model=gru data=parity trainer.max_epochs=20"
NAMES = "python train.py experiment=names"
SHAKESPEARE = "python train.py experiment=shakespeare"
ADDING_OPTUNA = "python train.py -m hparams_search=adding_optuna"
VANISHING_SUBSET = (
    "OMP_NUM_THREADS=1 python train.py -m experiment=vanishing data=adding data.T=10,50,100"
)
LONG_RANGE_SUBSET = (
    "OMP_NUM_THREADS=1 python train.py -m experiment=long_range variant=lstm,lstm_chrono,gru "
    "problem=adding_100"
)
BEST = "{run}/checkpoints/best.ckpt"
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist package

RUNS: dict[str, Run] = {
    # set-up and the tour
    "python train.py": Run(),
    PARITY: Run(),
    "python train.py model=rnn model.nonlinearity=relu model.num_layers=3": Run(),
    "python train.py data=pattern data.one_hot=false": Run(),
    "python train.py data=copy data.T=50 model=lstm model.hidden_size=128": Run(),
    "python train.py debug=fast": Run(limits=[]),
    "python train.py --help": Run(limits=[], output="== Config groups"),
    "python train.py --cfg job": Run(limits=[], output="hidden_size"),
    "python scripts/eval.py ckpt_path=outputs/<date>/<time>/checkpoints/best.ckpt": Run(
        limits=[], fill={"outputs/<date>/<time>": (PARITY, "{run}")}, output="test/acc"
    ),
    # resume: a run cut short after one epoch, resumed in its folder, and from its last.ckpt
    "python train.py data=parity trainer.max_epochs=50 hydra.run.dir=outputs/parity": Run(
        group="parity"
    ),
    "python train.py data=parity trainer.max_epochs=50 hydra.run.dir=outputs/parity resume=true": Run(
        limits=[*EPOCH, "trainer.max_epochs=2"], group="parity"
    ),
    "python train.py data=parity trainer.max_epochs=50 ckpt_path=outputs/parity/checkpoints/last.ckpt": Run(
        limits=[*EPOCH, "trainer.max_epochs=3"], group="parity"
    ),
    # inside the nets
    "python train.py insight=grad_flow": Run(),
    "python train.py insight=hidden_states model=lstm": Run(),
    "python train.py insight=histograms": Run(),
    "python train.py insight=all": Run(),
    "python train.py 'insight=[grad_flow,histograms]' callbacks.grad_flow.every_n_epochs=5": Run(),
    "python train.py experiment=vanishing": Run(slow=True),
    VANISHING_SUBSET: Run(output="Vanishing-gradient study:", slow=True),  # 9 jobs
    "OMP_NUM_THREADS=1 python train.py -m +variant=lstm,lstm_chrono,lstm_forget_bias data=adding "
    "data.T=100 data.n_train=4096 data.n_val=512 data.n_test=512 data.batch_size=32 "
    "trainer.max_epochs=15 seed=1,2,3 callbacks.early_stopping=null": Run(slow=True),  # 9 jobs
    "python train.py experiment=long_range": Run(slow=True),  # 70 jobs
    LONG_RANGE_SUBSET: Run(output="Long-range study:"),  # 3 jobs of 2 steps
    "OMP_NUM_THREADS=1 python train.py -m experiment=long_range problem=adding_100 "
    "callbacks.solve.budget_steps=2000": Run(slow=True),  # 10 jobs
    "python scripts/long_range_report.py outputs/multirun/<date>/<time>": Run(
        limits=[],
        fill={"outputs/multirun/<date>/<time>": (LONG_RANGE_SUBSET, "{run}")},
        output="not solved in 2 steps (budget 400)",
    ),
    # DDP on the CPU, with every default callback and logger
    "python train.py trainer=ddp_cpu": Run(),
    # SLURM: what one trial would ask for (needs hydra-submitit-launcher, in the dev extra)
    "python train.py hydra/launcher=slurm trainer=slurm hydra.launcher.nodes=2 --cfg hydra -p hydra.launcher": Run(
        limits=[], output="nodes: 2"
    ),
    "python train.py hydra/launcher=slurm trainer=slurm hydra.launcher.nodes=2 --cfg job --resolve -p trainer": Run(
        limits=[], output="num_nodes: 2"
    ),
    # sweeps
    "python train.py -m model=rnn,lstm,gru model.hidden_size=64,128": Run(slow=True),  # 6 jobs
    GRID_SEEDS: Run(),
    "python scripts/summarize_sweep.py outputs/multirun/<date>/<time>": Run(
        limits=[],
        fill={"outputs/multirun/<date>/<time>": (GRID_SEEDS, "{run}")},
        output="Mean and std over seeds",
    ),
    ADDING_OPTUNA: Run(limits=[*EPOCH, *TWO_TRIALS], group="adding_optuna"),
    "python train.py -m hparams_search=names_optuna": Run(
        limits=[*EPOCH, *TWO_TRIALS], needs_data=True
    ),
    "python train.py -m hparams_search=adding_optuna hydra.sweeper.n_trials=40": Run(
        limits=[*EPOCH, "hydra.sweeper.n_trials=3"], group="adding_optuna"
    ),
    "python train.py -m hparams_search=adding_optuna hydra/sweeper/pruner=none": Run(
        limits=[*EPOCH, "hydra.sweeper.n_trials=4"], group="adding_optuna"
    ),
    "python train.py -m hydra/sweeper=rnnlab_optuna 'model.hidden_size=choice(32,64)' optimizer.lr=\"tag(log, interval(1e-4, 1e-2))\" hydra.sweeper.n_trials=8": Run(
        limits=[*EPOCH, *TWO_TRIALS]
    ),
    "python scripts/summarize_sweep.py outputs/multirun/adding_optuna": Run(
        limits=[], group="adding_optuna", output="leaderboard.csv"
    ),
    # text
    NAMES: Run(needs_data=True),
    "python train.py experiment=names_char_rnn": Run(needs_data=True),
    "python train.py experiment=names data.balance=weights": Run(
        needs_data=True,
        slow=True,  # experiment=names itself runs by default
    ),
    "OMP_NUM_THREADS=1 python scripts/bench/names.py --seeds 1,2,3": Run(
        needs_data=True,
        output="mean ± std",
        slow=True,  # three runs of one short epoch
    ),
    "python train.py experiment=names trainer.val_check_interval=20 trainer.min_epochs=null callbacks.early_stopping.stopping_threshold=0.6": Run(
        limits=[*EPOCH, "++trainer.limit_train_batches=20"], needs_data=True
    ),
    SHAKESPEARE: Run(needs_data=True),
    "python train.py experiment=shakespeare data.path=my_book.txt": Run(
        files={"my_book.txt": "text"}
    ),
    "python train.py experiment=shakespeare data.stateful=true": Run(
        needs_data=True,
        slow=True,  # tests/test_chars_stateful.py covers the streams by default
    ),
    "python scripts/bench/chars.py --minutes 30 --out outputs/bench_chars": Run(
        limits=["--tiny", "--minutes", "0.5"], needs_data=True, slow=True, output="stateful"
    ),
    "python scripts/predict.py ckpt_path=outputs/<run>/checkpoints/best.ckpt names=[Dovesky,Satoshi]": Run(
        limits=[], fill={"outputs/<run>": (NAMES, "{run}")}, needs_data=True, output="Satoshi\t"
    ),
    "python scripts/predict.py ckpt_path=... input=names.txt top_k=3": Run(
        limits=[],
        fill={"ckpt_path=...": (NAMES, "ckpt_path=" + BEST)},
        files={"names.txt": "names"},
        needs_data=True,
        output="Dovesky\t",
    ),
    'python scripts/predict.py ckpt_path=<lm>.ckpt prompt="ROMEO:" length=300 temperature=0.8': Run(
        limits=[],
        fill={"<lm>": (SHAKESPEARE, "{run}/checkpoints/best")},
        needs_data=True,
        output="ROMEO:",
    ),
    "python scripts/eval.py ckpt_path=...": Run(
        limits=[],
        fill={"ckpt_path=...": (NAMES, "ckpt_path=" + BEST)},
        needs_data=True,
        output="test/acc",
    ),
    "python scripts/eval.py ckpt_path=... data.data_dir=other/names": Run(
        limits=[],
        fill={"ckpt_path=...": (NAMES, "ckpt_path=" + BEST)},
        files={"other/names": "names_folder"},
        needs_data=True,
        output="test/acc",
    ),
    # images as sequences
    "python train.py experiment=digits": Run(),
    "python train.py experiment=digits data.mode=pixels data.permute=true": Run(),
    "python train.py experiment=smnist data=fashion_mnist data.mode=rows": Run(
        needs_path=FASHION_MNIST
    ),
    # tools named in the text
    "python scripts/seeds.py": Run(limits=[]),
    "python scripts/seeds.py 002": Run(limits=[]),
    "python scripts/benchmark.py": Run(limits=["--tiny", "--repeats", "1"], slow=True),
    "python scripts/benchmark.py --sections overhead,fused --repeats 5": Run(
        limits=["--tiny", "--repeats", "1"], slow=True
    ),
    # the same run as tests/test_benchmark.py, which is in the default suite
    "python scripts/benchmark.py --tiny --out /tmp/b.md": Run(limits=[], slow=True),
}


def make_file(kind: str, path: Path) -> None:
    """The inputs a README command names: a text, a list of names, a folder of names."""
    if kind == "text":
        path.write_text(README.read_text(encoding="utf-8"), encoding="utf-8")
    elif kind == "names":
        path.write_text("Dovesky\nSatoshi\nJackson\n", encoding="utf-8")
    elif kind == "names_folder":
        path.mkdir(parents=True)
        for language in ("Japanese", "Russian"):
            lines = (SHARED_DATA / "names" / f"{language}.txt").read_text(encoding="utf-8")
            (path / f"{language}.txt").write_text("\n".join(lines.splitlines()[:40]) + "\n")
    else:
        raise ValueError(kind)


# --- running them -----------------------------------------------------------------------------


def dependencies(command: str) -> list[str]:
    """The commands whose output ``command`` reads, and those before it in its group."""
    spec = RUNS[command]
    deps = [source for source, _ in spec.fill.values()]
    if spec.group:
        members = [c for c in RUNS if RUNS[c].group == spec.group]
        deps += members[: members.index(command)]
    return deps


@dataclass
class Result:
    command: str
    argv: str
    cwd: Path
    returncode: int
    output: str
    run_dir: Path | None


def quote(arg: str) -> str:
    return (
        arg if re.fullmatch(r"[\w@%+=:,./\[\]-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"
    )


class Runner:
    """Runs README commands, each group in its own folder, dependencies first."""

    def __init__(self, base: Path, workers: int = 2) -> None:
        self.base = base
        self.futures: dict[str, Future] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(workers)

    def folder(self, command: str) -> Path:
        spec = RUNS[command]
        name = spec.group or f"c{list(RUNS).index(command)}"
        cwd = self.base / name
        with self.lock:
            if not cwd.exists():
                cwd.mkdir(parents=True)
                (cwd / "train.py").symlink_to(ROOT / "train.py")
                (cwd / "scripts").symlink_to(ROOT / "scripts")
        return cwd

    def submit(self, command: str) -> Future:
        with self.lock:
            if command not in self.futures:
                self.futures[command] = self.pool.submit(self.execute, command)
            return self.futures[command]

    def result(self, command: str) -> Result:
        return self.submit(command).result()

    def execute(self, command: str) -> Result:
        spec = RUNS[command]
        text = command
        for placeholder, (source, path) in spec.fill.items():
            made = self.result(source)
            assert made.returncode == 0 and made.run_dir, (
                f"{source!r} failed: {made.output[-2000:]}"
            )
            text = text.replace(placeholder, path.format(run=made.run_dir))
        for dep in dependencies(command):
            self.result(dep)
        cwd = self.folder(command)
        for name, kind in spec.files.items():
            if not (cwd / name).exists():
                make_file(kind, cwd / name)
        extra = list(spec.limits)
        if spec.limits and "train.py" in text:
            extra.append(f"paths.log_dir={cwd / 'outputs'}")
        argv = " ".join([text, *map(quote, extra)])
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])
        )
        env.setdefault("OMP_NUM_THREADS", "1")  # two commands at a time on a small machine
        for key in ("HYDRA_FULL_ERROR", "COLUMNS"):
            env.pop(key, None)
        done = subprocess.run(
            ["bash", "-c", argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=900,
        )
        sweep = " -m " in f" {text} "
        made = self.made(cwd, done.stdout, sweep)
        return Result(command, argv, cwd, done.returncode, done.stdout, made)

    @staticmethod
    def made(cwd: Path, output: str, sweep: bool) -> Path | None:
        """The sweep's directory (the newest in the command's folder), or the run's directory."""
        if sweep:
            jobs = (cwd / "outputs" / "multirun").glob("**/.hydra")
            found = sorted({p.parent.parent for p in jobs}, key=lambda p: p.stat().st_mtime)
            return found[-1] if found else None
        runs = re.findall(r"Run directory: (\S+)", output)
        return Path(runs[-1]) if runs else None


def check(result: Result) -> None:
    """A README command worked: exit 0, and a training run ended completed."""
    spec = RUNS[result.command]
    assert result.returncode == 0, (
        f"`{result.argv}` (in {result.cwd}) exited {result.returncode}:\n{result.output[-4000:]}"
    )
    assert "Traceback" not in result.output, result.output[-4000:]
    if spec.output:
        assert spec.output in result.output, result.output[-3000:]
    words = result.command.split()
    if "train.py" in result.command and "--cfg" not in words and "--help" not in words:
        assert result.run_dir is not None, result.output[-3000:]
        records = (
            [result.run_dir / "metrics.json"]
            if (result.run_dir / "metrics.json").exists()
            else sorted(result.run_dir.glob("*/metrics.json"))
        )
        assert records, f"no metrics.json under {result.run_dir}"
        for path in records:
            record = json.loads(path.read_text())
            assert record["status"] == "completed", (path, record["status"])
            assert record["metrics"], path


# --- the tests --------------------------------------------------------------------------------


def test_every_readme_command_is_run_or_listed():
    commands = commands_in(README.read_text(encoding="utf-8"))
    assert len(commands) >= 40
    unknown = [c for c in commands if c not in RUNS and c not in CANNOT_RUN_HERE]
    assert not unknown, (
        "README commands that are neither run by tests/test_readme.py nor listed in "
        f"CANNOT_RUN_HERE with a reason: {unknown}"
    )
    stale = [c for c in [*RUNS, *CANNOT_RUN_HERE] if c not in commands]
    assert not stale, (
        f"commands tests/test_readme.py knows that the README no longer prints: {stale}"
    )
    for command in RUNS:
        for source in dependencies(command):
            assert not RUNS[source].slow, f"{command!r} depends on the slow {source!r}"


def test_the_collector_reads_chains_continuations_and_comments():
    markdown = (
        "```bash\n"
        "pip install -e . && python train.py            # install, then train\n"
        "python train.py -m model=lstm \\\n"
        "    seed=1,2   # a comment with 'quotes'\n"
        "OMP_NUM_THREADS=1 python train.py 'insight=[a,b]' x=\"#not a comment\"\n"
        "tensorboard --logdir outputs\n"
        "```\n"
        "```\n"
        "python train.py in-a-plain-block\n"
        "```\n"
    )
    assert commands_in(markdown) == [
        "python train.py",
        "python train.py -m model=lstm seed=1,2",
        "OMP_NUM_THREADS=1 python train.py 'insight=[a,b]' x=\"#not a comment\"",
    ]


def test_a_broken_command_fails_the_check(tmp_path, monkeypatch):
    """The check can fail: a misspelled option, run the same way, is reported with its output."""
    broken = "python train.py model=lstmm"
    monkeypatch.setitem(RUNS, broken, Run())
    runner = Runner(tmp_path, workers=1)
    result = runner.result(broken)
    with pytest.raises(AssertionError, match="could not find 'model/lstmm'"):
        check(result)


def _runnable(command: str) -> bool:
    spec = RUNS[command]
    if spec.needs_path and not Path(spec.needs_path).exists():
        return False
    return not spec.slow and not (spec.needs_data and not SHARED_DATA.is_dir())


@pytest.fixture(scope="module")
def runner(request, tmp_path_factory):
    """Starts every selected runnable command at once (two at a time), in README order."""
    runner = Runner(tmp_path_factory.mktemp("readme"))
    selected = {
        item.callspec.params["command"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_readme_command"
    }
    for command in commands_in(README.read_text(encoding="utf-8")):
        if command in selected and command in RUNS and _runnable(command):
            runner.submit(command)
    yield runner
    runner.pool.shutdown(wait=True, cancel_futures=True)


def _params():
    params = []
    for command in commands_in(README.read_text(encoding="utf-8")):
        marks = []
        if command in CANNOT_RUN_HERE:
            marks.append(pytest.mark.skip(reason=CANNOT_RUN_HERE[command]))
        elif command in RUNS and RUNS[command].slow:
            marks.append(pytest.mark.slow)
        params.append(pytest.param(command, marks=marks, id=command[:80]))
    return params


@pytest.mark.parametrize("command", _params())
def test_readme_command(command, runner):
    if command not in RUNS:
        pytest.fail(f"{command!r} is neither run nor listed (see the first test)")
    spec = RUNS[command]
    if spec.needs_data and not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data sets at {SHARED_DATA}")
    if spec.needs_path and not Path(spec.needs_path).exists():
        pytest.skip(f"needs {spec.needs_path} (apt-get install dataset-fashion-mnist)")
    if "hydra/launcher=slurm" in command and shutil.which("sbatch") is None:
        pytest.importorskip(
            "hydra_plugins.hydra_submitit_launcher",
            reason="needs hydra-submitit-launcher (pip install -e '.[slurm]')",
        )
    check(runner.result(command))
