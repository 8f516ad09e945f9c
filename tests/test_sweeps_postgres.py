"""Optuna sweeps on a real PostgreSQL server: shared studies, killed trials, fresh databases.

A throwaway server (its own data folder and port on 127.0.0.1) runs for this module and is
stopped at the end. Without a PostgreSQL server binary or the psycopg2 driver the tests skip,
saying which is missing (``.ci/run`` installs Debian's ``postgresql``; the ``dev`` extra installs
``psycopg2-binary``).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, run_cli
from optuna.trial import TrialState

from hydra_plugins.rnnlab_optuna_sweeper._impl import normalize_url, open_storage
from rnnlab.sweeps import leaderboard, load_sweep

TINY = [
    "data.T=5",
    "data.n_train=64",
    "data.n_val=32",
    "data.n_test=32",
    "data.batch_size=32",
    "model.hidden_size=8",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def server_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A running PostgreSQL server for this module; yields its URL without a database name."""
    pytest.importorskip("psycopg2", reason="the psycopg2 driver is not installed (.[postgres])")
    binaries = server_binaries()
    if binaries is None:
        pytest.skip(
            "no PostgreSQL server binary (initdb, pg_ctl) found; apt-get install postgresql"
        )
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if (
            shutil.which("runuser") is None
            or subprocess.run(["id", "postgres"], capture_output=True).returncode
        ):
            pytest.skip("running as root without a postgres user to run the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="rnnlab-pg-"))  # not under root's 0700 pytest folder
    data = folder / "data"
    if prefix:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        [*prefix, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
         "--no-sync"],
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = subprocess.run(
        [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l",
         str(folder / "server.log"), "-w", "-t", "60", "start"],
        capture_output=True, text=True,
    )  # fmt: skip
    if started.returncode:
        log = (folder / "server.log").read_text() if (folder / "server.log").is_file() else ""
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"the PostgreSQL server did not start: {started.stderr} {log[-2000:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


_databases = iter(range(1000))


@pytest.fixture
def database(postgres) -> str:
    """A fresh, empty database on the server; its URL in the form the README gives."""
    import psycopg2

    name = f"sweep{next(_databases)}"
    connection = psycopg2.connect(f"{postgres}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return f"{postgres}/{name}"


def sweep_command(sweep_dir: Path, url: str, *extra: str) -> list[str]:
    """`python train.py -m ...`: a study on the server, lr searched on a log scale."""
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        *TINY,
        "hydra/sweeper=rnnlab_optuna",
        "hydra.sweeper.study_name=shared",
        f"hydra.sweeper.storage={url}",
        "hydra.sweeper.sampler.seed=1234",
        "hydra/sweeper/pruner=none",
        "optimizer.lr=tag(log, interval(1e-4, 1e-1))",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
    ]


def start(command: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)  # fmt: skip


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(
                f"exit {process.returncode} before {what}: {log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_the_readme_url_opens_with_the_postgres_extra(database):
    """`postgresql://` alone means psycopg 3 to SQLAlchemy 2.1; rnnlab opens it with psycopg2."""
    assert database.startswith("postgresql://")
    assert normalize_url(database).startswith("postgresql+psycopg2://")
    storage = open_storage(normalize_url(database), heartbeat_interval=5, grace_period=None)
    study = optuna.create_study(study_name="probe", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="probe", storage=storage).trials) == 2


OPEN_AT_ONCE = """
import sys, time
from hydra_plugins.rnnlab_optuna_sweeper._impl import normalize_url, open_storage
url, start = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
storage = open_storage(normalize_url(url), heartbeat_interval=5, grace_period=None)
print(len(storage.get_all_studies()))
"""


def test_processes_opening_a_fresh_database_at_once_all_get_the_storage(database, tmp_path):
    """Each creates Optuna's tables and types (CREATE TYPE studydirection ...); the losers of
    that race retry instead of dying with an IntegrityError."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start_at = str(time.time() + 8)  # after every interpreter has imported optuna
    processes = [
        subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, database, start_at], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    results = [p.communicate(timeout=120) for p in processes]
    for process, (stdout, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr[-3000:]
        assert stdout.strip() == "0" and "Traceback" not in stderr


def test_two_sweeps_share_a_study_and_a_killed_trial_becomes_fail(database, tmp_path):
    """Two processes start at once on a fresh database; one is killed in the middle of a trial.
    The other finishes the study: n_trials finished, the killed trial FAIL, no point twice."""
    n_trials = 4
    beat = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    first, second = tmp_path / "first", tmp_path / "second"
    # the trial to kill: long enough to be killed in the middle
    slow = ["trainer.max_epochs=200", "data.n_train=512", "callbacks.early_stopping=null"]
    victim = start(sweep_command(first, database, f"hydra.sweeper.n_trials={n_trials}", *beat,
                                 *slow), tmp_path / "first.log")  # fmt: skip
    survivor = start(
        sweep_command(second, database, f"hydra.sweeper.n_trials={n_trials}", *beat,
                      "trainer.max_epochs=2"),
        tmp_path / "second.log",
    )  # fmt: skip
    try:
        # the victim's first trial has started training (its job folder has a train.log)
        wait_for(
            lambda: any(first.glob("*/train.log")),
            120,
            "the first sweep's trial",
            victim,
            tmp_path / "first.log",
        )
        time.sleep(1.0)
        assert victim.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        killed_job = int(next(first.glob("*/train.log")).parent.name)
        assert not (first / str(killed_job) / "metrics.json").exists()  # mid-trial
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        assert survivor.wait(180) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.kill()
    out = (tmp_path / "second.log").read_text()
    assert "Traceback" not in out and "IntegrityError" not in out
    assert "Traceback" not in (tmp_path / "first.log").read_text()

    study = optuna.load_study(study_name="shared", storage=normalize_url(database))
    trials = study.get_trials()
    finished = [t for t in trials if t.state.is_finished()]
    assert len(finished) == n_trials  # the killed trial counts as a finished FAIL
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    killed = trials[killed_job]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["error"] == "its process died: no heartbeat for over 3 s"
    assert [t.state for t in trials].count(TrialState.COMPLETE) == n_trials - 1
    # no configuration twice: every trial drew its own point, from its own seed
    lrs = [t.params["optimizer.lr"] for t in trials]
    assert len(set(lrs)) == len(lrs)
    assert [t.user_attrs["sampler_seed"] for t in trials] == [1234 + t.number for t in trials]

    # the survivor's summary, printed at its end and written into its folder
    assert (
        f"{n_trials} trials (Optuna study 'shared'): {n_trials - 1} complete, 0 pruned, 1 failed"
        in out
    )
    assert (second / "leaderboard.md").is_file() and (second / "sweep.png").is_file()
    for folder in (first, second):  # each folder's leaderboard holds the whole study
        sweep = load_sweep(folder)
        rows = {r["job"]: r for r in leaderboard(sweep)}
        assert sorted(rows) == list(range(n_trials))
        assert rows[killed_job]["status"] == "FAIL"
        assert rows[killed_job]["error"] == "its process died: no heartbeat for over 3 s"
        complete = [r for r in rows.values() if r["status"] == "COMPLETE"]
        assert len(complete) == n_trials - 1
        for row in complete:
            assert row[sweep.objective] == pytest.approx(trials[row["job"]].value, abs=1e-6)
    summary = run_cli([str(first)], script="scripts/summarize_sweep.py", timeout=120)
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert f"{n_trials - 1} complete, 0 pruned, 1 failed" in summary.stdout
