"""The prepared GPU check (`scripts/gpu_check.sh`): its CPU rehearsal, its report and its merge."""

from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest
from gpu_check import MODELS, SECTION, markdown, merge, read_junit

from rnnlab.config import ROOT


def run_check(out, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", _python())}
    return subprocess.run(
        [str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _python() -> str:
    import sys

    return sys.executable


def test_dry_run_throughput_measures_every_model_at_every_size(tmp_path):
    proc = run_check(tmp_path, "--steps", "throughput")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["dry_run"] is True and results["errors"] == {}
    rows = results["throughput"]["rows"]
    sizes = {(b, h, t) for b in (2, 4) for h in (8, 16) for t in (8, 32)}
    assert {(r["model"], r["batch"], r["hidden"], r["T"]) for r in rows} == {
        (m, *s) for m in MODELS for s in sizes
    }
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in rows)
    # tokens a second are batch x T over the time of a step
    for r in rows:
        assert r["tokens_per_s"] == pytest.approx(
            r["batch"] * r["T"] / r["ms_per_step"] * 1000, rel=0.01
        )
    with open(tmp_path / "throughput.csv") as f:
        assert len(list(csv.DictReader(f))) == len(MODELS) * len(sizes)
    section = (tmp_path / "gpu_check.md").read_text()
    assert section.startswith(SECTION) and "A dry run" in section
    assert sum(line.startswith("| indrnn | ") for line in section.splitlines()) == len(sizes)


def fake_results(best: float, dry_run: bool = False) -> dict:
    row = {"model": "lstm", "batch": 64, "hidden": 256, "T": 128, "status": "ok"}
    row.update(tokens_per_s=1_234_000, ms_per_step=6.64, peak_mib=812)
    return {
        "dry_run": dry_run,
        "errors": {},
        "total_s": 431.0,
        "environment": {"device": "NVIDIA H200", "torch": "2.11.0", "cuda": "13.0", "date": "x"},
        "tests": {
            "returncode": 1,
            "timed_out": False,
            "tests": [
                {"name": "test_a", "outcome": "passed", "seconds": 1.0, "message": ""},
                {"name": "test_b", "outcome": "failed", "seconds": 2.0, "message": "boom"},
            ],
        },
        "shakespeare": {
            "command": "python train.py experiment=shakespeare",
            "max_time_s": 180,
            "wall_s": 221.0,
            "epochs": 40,
            "metrics": {"val/loss_best": best, "test/loss": best + 0.01},
        },
        "names": {
            "command": "python train.py experiment=names trainer=gpu",
            "wall_s": 31.5,
            "duration_s": 27.0,
            "metrics": {"test/acc": 0.871, "test/f1_macro": 0.62},
        },
        "throughput": {
            "device": "cuda",
            "rows": [row, {**row, "T": 1024, "status": "out of memory"}],
        },
    }


def test_the_report_states_the_goal_and_every_figure():
    met, missed = markdown(fake_results(1.452)), markdown(fake_results(1.6))
    assert "best validation loss 1.452 nats/char" in met and "nats/char" in met
    assert met.rstrip().endswith("|")  # the throughput table closes the section
    assert "3 minutes): met." in met and "3 minutes): not reached." in missed
    assert "1 passed, 1 failed, 0 errors, 0 skipped" in met
    assert "| `test_b` | failed (boom) | 2.0 |" in met
    assert "| lstm | 64 | 256 | 128 | 1234.0 | 6.64 | 812 |" in met
    assert "| lstm | 64 | 256 | 1024 | out of memory |  |  |" in met
    assert "31.5 s from start to exit" in met and "test accuracy 0.871" in met


def test_merge_replaces_section_six_and_keeps_the_rest(tmp_path):
    target = tmp_path / "BENCHMARKS.md"
    original = (ROOT / "BENCHMARKS.md").read_text()
    target.write_text(original)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(fake_results(1.45)))
    merge(results, target)
    text = target.read_text()
    assert text.count(SECTION) == 1 and "NVIDIA H200" in text
    before, after = original.split(SECTION)[0], original.split(SECTION)[1].split("\n## ", 1)[1]
    assert text.startswith(before) and text.endswith("\n## " + after)
    # a dry run's figures are not measurements: refused unless forced
    results.write_text(json.dumps(fake_results(1.45, dry_run=True)))
    with pytest.raises(SystemExit, match="dry run"):
        merge(results, target)
    assert target.read_text() == text


def test_without_cuda_the_real_check_refuses_to_start(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    proc = subprocess.run(
        [_python(), str(ROOT / "scripts" / "gpu_check.py"), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "--dry-run" in proc.stdout


@pytest.mark.slow
def test_full_dry_run_runs_every_step_on_the_cpu(tmp_path):
    proc = run_check(tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == {}
    outcomes = [t["outcome"] for t in results["tests"]["tests"]]
    assert len(outcomes) == 7 and set(outcomes) == {"skipped"}  # no CUDA here
    for step in ("names", "shakespeare"):
        run = results[step]
        assert run["returncode"] == 0 and run["status"] == "completed", step
        assert 0 < run["duration_s"] < run["wall_s"]
    assert 0 <= results["names"]["metrics"]["test/acc"] <= 1
    assert 0 < results["shakespeare"]["metrics"]["val/loss_best"] < 10  # ln 65 = 4.17 at the start
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {
        "results.json",
        "gpu_check.md",
        "throughput.csv",
        "tests.log",
        "tests.xml",
        "names.log",
        "shakespeare.log",
    }


def test_a_cpu_benchmark_run_keeps_the_measured_gpu_section(tmp_path):
    import benchmark
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the section would be measured anew")
    section = markdown(fake_results(1.45))
    previous = f"# Benchmarks\n\n## 5. Start-up\n\nx\n\n{section}\n\n## 7. Options\n\ny\n"
    report = benchmark.Report(previous)
    benchmark.gpu(report, repeats=1, tiny=True)
    assert "".join(report.parts).strip() == section.strip()
    # a dry run's section, or none, is not kept
    for text in (previous.replace(section, markdown(fake_results(1.45, dry_run=True))), ""):
        report = benchmark.Report(text)
        benchmark.gpu(report, repeats=1, tiny=True)
        assert "Not measured in this run" in "".join(report.parts)


def test_the_junit_record_gives_each_outcome_and_its_first_line(tmp_path):
    xml = tmp_path / "tests.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase name="test_ok" time="1.234"/>'
        '<testcase name="test_bad" time="2"><failure message="assert 1 == 2&#10;more">x</failure>'
        "</testcase>"
        '<testcase name="test_err" time="0"><error>RuntimeError: NCCL</error></testcase>'
        '<testcase name="test_gpu" time="0"><skipped message="needs a CUDA device"/></testcase>'
        "</testsuite></testsuites>"
    )
    assert read_junit(xml) == [
        {"name": "test_ok", "outcome": "passed", "seconds": 1.23, "message": ""},
        {"name": "test_bad", "outcome": "failed", "seconds": 2.0, "message": "assert 1 == 2"},
        {"name": "test_err", "outcome": "error", "seconds": 0.0, "message": "RuntimeError: NCCL"},
        {
            "name": "test_gpu",
            "outcome": "skipped",
            "seconds": 0.0,
            "message": "needs a CUDA device",
        },
    ]
