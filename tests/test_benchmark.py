"""The benchmark script runs end to end at tiny sizes and writes every section (timings unchecked)."""

from __future__ import annotations

import re

import pytest
from conftest import run_cli


@pytest.mark.slow  # about a minute; a single section runs by default below
def test_the_benchmark_runs_every_section_at_tiny_sizes(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    result = run_cli(
        ["--tiny", "--repeats", "1", "--out", str(out)], script="scripts/benchmark.py", timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    titles = re.findall(r"^## (\d)\. ", report, flags=re.M)
    assert titles == ["1", "2", "3", "4", "5", "6", "7"]
    assert "- Command: `python scripts/benchmark.py --tiny" in report
    assert "torch " in report and "lightning " in report
    # every timing table holds numbers and a ratio to its baseline
    overhead = report.split("## 1.")[1].split("## 2.")[0]
    check_overhead(overhead)
    names = report.split("## 2.")[1].split("## 3.")[0]
    assert re.search(
        r"\| tutorial, one name at a time \(training only\) \| [\d.]+ \| [01]\.\d{3}", names
    )
    assert re.search(
        r"stopped at the tutorial's accuracy, whole process \| [\d.]+ \| [01]\.\d{3}", names
    )
    assert re.search(r"per-step cost x[\d.]+ from T=32 to T=64", report)
    assert re.search(r"\| `python train.py debug=fast` \| [\d.]+ \| [\d.]+x \|", report)


def check_overhead(overhead: str) -> None:
    """Section 1: each loop's time, its paired ratio to the plain loop and the ratios' range."""
    plain = (
        r"\| plain PyTorch loop \(train \+ val each epoch\) \| [\d.]+ \| 1\.00x \| 1\.00-1\.00x \|"
    )
    assert re.search(plain + r" [\d.]+-[\d.]+ \|", overhead), overhead
    stock = r"\| stock Lightning, logger/progress bar/checkpoints off \| [\d.]+ \| ([\d.]+)x \| "
    low, high = re.search(stock + r"([\d.]+)-([\d.]+)x \|", overhead).groups()[1:]
    assert float(low) <= float(high)
    assert "| rnnlab, defaults (TensorBoard" in overhead
    assert re.search(
        r"below stock Lightning's defaults \([\d.]+x against [\d.]+x\): not judged at --tiny",
        overhead,
    ), overhead


def test_the_overhead_section_gives_paired_ratios(tmp_path):
    out = tmp_path / "overhead.md"
    result = run_cli(
        ["--tiny", "--sections", "overhead", "--repeats", "2", "--out", str(out)],
        script="scripts/benchmark.py",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check_overhead(out.read_text().split("## 1.")[1])


def test_an_unknown_section_is_one_clear_error(tmp_path):
    result = run_cli(["--sections", "overhead,speed"], script="scripts/benchmark.py")
    assert result.returncode == 2
    assert "unknown section(s) ['speed']" in result.stderr


def test_a_rerun_keeps_the_hand_written_reading_of_the_numbers(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# old tables\n\n## Reading these numbers\n\nThe overhead is per epoch.\n")
    result = run_cli(
        ["--tiny", "--sections", "fused", "--out", str(out)], script="scripts/benchmark.py"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    assert "# old tables" not in report and "## 3. Fused" in report
    assert report.endswith("## Reading these numbers\n\nThe overhead is per epoch.\n")
