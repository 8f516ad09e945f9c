"""The GPU check: the `gpu` tests, a throughput table, Shakespeare for 3 minutes, the names recipe.

    scripts/gpu_check.sh                  # on a CUDA machine: about 7.5 minutes in all
    scripts/gpu_check.sh --dry-run        # every step at tiny sizes on the CPU (a test runs it)
    python scripts/gpu_check.py --merge outputs/gpu_check/results.json   # into BENCHMARKS.md

`scripts/gpu_check.sh` first installs what the machine lacks from `gpu_bundle/` (made by
`scripts/gpu_bundle.sh`), then runs this file. Results go to ``--out``, or to ``$OUT`` when that is
set, or to ``outputs/gpu_check/``: ``results.json`` (everything, rewritten after each step, so a
run cut short keeps what it measured), ``gpu_check.md`` (section 6 of BENCHMARKS.md),
``throughput.csv`` and the logs of the pytest run and the two training runs. ``--merge`` puts the
section into BENCHMARKS.md in place of the one there.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = Path(os.environ.get("RNNLAB_GPU_BUNDLE", ROOT / "gpu_bundle"))
SHARED = ROOT.parent / "shared" / "data"
RUNS = ROOT / "outputs" / "gpu_check_runs"
SECTION = "## 6. GPU"
STEPS = ("tests", "shakespeare", "names", "throughput")  # the order they run in
MODELS = ("lstm", "gru", "mingru", "minlstm", "lru", "s4d", "indrnn")
VOCAB = 65  # Tiny Shakespeare's characters
GOAL_NATS = 1.47  # nanoGPT's character transformer on Tiny Shakespeare, about 3 minutes on an A100


class Sizes:
    """What each step runs: the real sizes on a GPU, tiny ones for ``--dry-run`` on the CPU."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.batches = (2, 4) if dry_run else (64, 256)
        self.hiddens = (8, 16) if dry_run else (256, 1024)
        self.lengths = (8, 32) if dry_run else (128, 1024)
        # seconds for the whole check: within 8 minutes with the set-up on a GPU; a dry run on a
        # busy CPU is slow, and is not timed
        self.budget = 1800.0 if dry_run else 470.0
        self.test_timeout = 300.0 if dry_run else 150.0  # a busy CPU is slow to start pytest
        self.throughput_budget = 30.0 if dry_run else 90.0  # or what is left, if less
        self.min_seconds = 0.0 if dry_run else 0.25  # timed steps per row: at least this long
        self.train_timeout = 300.0 if dry_run else 150.0  # start-up, data, test: beyond max_time
        self.shakespeare_seconds = 10 if dry_run else 180
        # the CPU's stand-ins: a few batches of a small net
        tiny = [
            "trainer.max_epochs=1",
            "++trainer.limit_train_batches=3",
            "++trainer.limit_val_batches=2",
            "++trainer.limit_test_batches=2",
            "model.hidden_size=16",
        ]
        self.train_overrides = tiny if dry_run else []
        self.trainer = "cpu" if dry_run else "gpu"


# ---------------------------------------------------------------- the steps


def environment() -> dict:
    import lightning
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "host_cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["device"] = torch.cuda.get_device_name(0)
        env["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["device"] = "cpu"
    return env


def run_tests(out: Path, sizes: Sizes) -> dict:
    """``pytest -m gpu tests/test_gpu.py``; each test's outcome from its JUnit record."""
    xml = out / "tests.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests/test_gpu.py",
        "-m",
        "gpu",
        "-o",
        "addopts=",  # no xdist, no 'not slow' filter: the file's gpu tests, one process
        "-p",
        "no:cacheprovider",
        "-q",
        "-rA",
        f"--junitxml={xml}",
    ]
    proc = _run(cmd, out / "tests.log", sizes.test_timeout)
    tests = read_junit(xml) if xml.is_file() else []
    return {"returncode": proc["returncode"], "timed_out": proc["timed_out"], "tests": tests}


def read_junit(xml: Path) -> list[dict]:
    """Each test case of a JUnit XML file: its name, outcome, seconds and first message line."""
    tests = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error"}.get(child.tag, "skipped")
                lines = (child.get("message") or child.text or "").strip().splitlines()
                message = (lines or [""])[0][:200]
        tests.append(
            {
                "name": case.get("name"),
                "outcome": outcome,
                "seconds": round(float(case.get("time") or 0), 2),
                "message": message,
            }
        )
    return tests


def build_net(model: str, hidden: int):
    """One layer of ``conf/model/<model>.yaml`` at ``hidden`` units, a character LM's head."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.load(ROOT / "conf" / "model" / f"{model}.yaml")
    node.hidden_size, node.num_layers, node.dropout = hidden, 1, 0.0
    return instantiate(node, output_size=VOCAB, output_mode="sequence", vocab_size=VOCAB)


def throughput(out: Path, sizes: Sizes, seconds: float) -> dict:
    """Training tokens a second (forward, backward, Adam; float32) and peak memory per row,
    for ``seconds`` at most: rows not reached by then are marked so."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not sizes.dry_run else "cpu")
    grid = [
        (T, batch, hidden, model)
        for T in sizes.lengths
        for batch in sizes.batches
        for hidden in sizes.hiddens
        for model in MODELS
    ]
    deadline = time.monotonic() + seconds
    rows = []
    for T, batch, hidden, model in grid:  # the smaller sizes first: each model gets those
        row = {"model": model, "batch": batch, "hidden": hidden, "T": T}
        rows.append(row)
        if time.monotonic() > deadline:
            row["status"] = "not run: time budget spent"
            continue
        try:
            row.update(_train_rate(model, batch, hidden, T, device, sizes.min_seconds))
            row["status"] = "ok"
        except torch.OutOfMemoryError:
            row["status"] = "out of memory"
        except RuntimeError as e:
            row["status"] = "failed: " + str(e).strip().splitlines()[0][:120]
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    with open(out / "throughput.csv", "w", newline="") as f:
        keys = [
            "model",
            "batch",
            "hidden",
            "T",
            "tokens_per_s",
            "ms_per_step",
            "peak_mib",
            "status",
        ]
        writer = csv.DictWriter(f, keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return {"device": str(device), "rows": rows}


def _train_rate(model: str, batch: int, hidden: int, T: int, device, min_seconds: float) -> dict:
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = build_net(model, hidden).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randint(0, VOCAB, (batch, T), device=device)
    y = torch.randint(0, VOCAB, (batch, T), device=device)
    cuda = device.type == "cuda"

    def step() -> None:
        loss = nn.functional.cross_entropy(net(x, None).reshape(-1, VOCAB), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):  # warm-up: kernels chosen, memory pools filled
        step()
    if cuda:
        torch.cuda.synchronize()
    steps, start = 0, time.perf_counter()
    while steps < 3 or (time.perf_counter() - start < min_seconds and steps < 50):
        step()
        steps += 1
        if cuda:
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return {
        "tokens_per_s": round(batch * T / seconds),
        "ms_per_step": round(seconds * 1000, 3),
        "peak_mib": None if peak is None else round(peak),
    }


def data_path(*parts: str) -> Path:
    """A data set beside the project (``../shared/data``), else the bundle's copy."""
    for base in (SHARED, BUNDLE / "data"):
        if base.joinpath(*parts).exists():
            return base.joinpath(*parts)
    raise FileNotFoundError(
        f"{'/'.join(parts)} is neither in {SHARED} nor in {BUNDLE / 'data'}: "
        "run scripts/gpu_bundle.sh where the data is"
    )


def train_run(out: Path, name: str, args: list[str], timeout: float) -> dict:
    """``python train.py <args>`` timed from start to exit, with its metrics.json; the run's
    folder (checkpoints, TensorBoard) is ``outputs/gpu_check_runs/<name>``, its log in ``out``."""
    run_dir = RUNS / name
    cmd = [sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    proc = _run(cmd, out / f"{name}.log", timeout)
    result = {"command": "python " + " ".join(cmd[1:-1]), **proc}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    record = run_dir / "metrics.json"
    if record.is_file():
        data = json.loads(record.read_text())
        result["metrics"] = data.get("metrics", {})
        result["epochs"] = data.get("epochs")
        result["duration_s"] = data.get("duration_s")
        result["status"] = data.get("status")
    return result


def shakespeare(out: Path, sizes: Sizes, seconds: int, extra: list[str] = ()) -> dict:
    """``experiment=shakespeare`` on the device for ``seconds`` of training (Lightning's max_time)."""
    clock = f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"
    args = [
        "experiment=shakespeare",
        f"trainer={sizes.trainer}",
        f"+trainer.max_time={clock}",
        "trainer.max_epochs=-1",  # the clock stops it
        f"data.path={data_path('tinyshakespeare', 'input.txt')}",
        *sizes.train_overrides,
        *extra,
    ]
    if sizes.dry_run:
        args.remove("trainer.max_epochs=-1")
    result = train_run(out, "shakespeare", args, seconds + sizes.train_timeout)
    result["max_time_s"] = seconds
    return result


def names(out: Path, sizes: Sizes, timeout: float) -> dict:
    args = [
        "experiment=names",
        f"trainer={sizes.trainer}",
        f"data.data_dir={data_path('names')}",
        *sizes.train_overrides,
    ]
    return train_run(out, "names", args, timeout)


def _run(cmd: list[str], log: Path, timeout: float) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    with open(log, "w") as f:
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout
            )
            return {"returncode": proc.returncode, "timed_out": False}
        except subprocess.TimeoutExpired:
            return {"returncode": None, "timed_out": True}


# ---------------------------------------------------------------- the report


def _metric(result: dict, key: str) -> float | None:
    value = (result.get("metrics") or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def markdown(results: dict) -> str:
    """Section 6 of BENCHMARKS.md from ``results``."""
    env = results["environment"]
    lines = [
        SECTION,
        "",
        f"Made by `scripts/gpu_check.sh` on {env.get('device')} "
        f"({env.get('device_memory_gib', '?')} GiB), torch {env.get('torch')} "
        f"(CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}), lightning {env.get('lightning')}, "
        f"Python {env.get('python')}, {env.get('date')}; the whole check took "
        f"{results.get('total_s', '?')} s."
        + (
            " **A dry run: tiny sizes on the CPU, not a measurement.**"
            if results["dry_run"]
            else ""
        ),
        "",
    ]
    tests = results.get("tests")
    if tests:
        outcomes = [t["outcome"] for t in tests["tests"]]
        lines += [
            f"Tests marked `gpu` (`pytest -m gpu tests/test_gpu.py`): "
            f"{outcomes.count('passed')} passed, {outcomes.count('failed')} failed, "
            f"{outcomes.count('error')} errors, {outcomes.count('skipped')} skipped"
            + (" (stopped at its time limit)" if tests.get("timed_out") else "")
            + ".",
            "",
            "| test | outcome | seconds |",
            "|---|---|---|",
        ]
        for t in tests["tests"]:
            note = f" ({t['message']})" if t["message"] and t["outcome"] != "passed" else ""
            lines.append(f"| `{t['name']}` | {t['outcome']}{note} | {t['seconds']} |")
        lines.append("")
    shakes = results.get("shakespeare")
    if shakes:
        best = _metric(shakes, "val/loss_best")
        test = _metric(shakes, "test/loss")
        verdict = "not reached"
        if best is not None and best <= GOAL_NATS:
            verdict = "met"
        lines += [
            f"`experiment=shakespeare` for {shakes['max_time_s']} s of training "
            f"(`{shakes['command']}`): best validation loss "
            f"{_fmt(best, '.3f')} nats/char, test loss of the best checkpoint "
            f"{_fmt(test, '.3f')}, {shakes.get('epochs', '?')} epochs, "
            f"{shakes.get('wall_s', '?')} s from start to exit. Goal, at most {GOAL_NATS} "
            f"nats/char (nanoGPT's character transformer on an A100 in about 3 minutes): "
            f"{verdict}.",
            "",
        ]
    names_run = results.get("names")
    if names_run:
        lines += [
            f"The names recipe (`{names_run['command']}`): {names_run.get('wall_s', '?')} s "
            f"from start to exit ({_fmt(names_run.get('duration_s'), '.1f')} s in `metrics.json`), "
            f"test accuracy {_fmt(_metric(names_run, 'test/acc'), '.3f')}, macro F1 "
            f"{_fmt(_metric(names_run, 'test/f1_macro'), '.3f')}.",
            "",
        ]
    table = results.get("throughput")
    if table:
        lines += [
            "Throughput: one layer of each model as a character language model (65 symbols, "
            "embedding, head at every step), forward + backward + Adam in float32, on "
            f"{table['device']}; thousands of training tokens a second and peak memory "
            "(`torch.cuda.max_memory_allocated`).",
            "",
            "| model | batch | hidden | T | k tokens / s | ms / step | peak MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in table["rows"]:
            if r.get("status") == "ok":
                cells = [
                    f"{r['tokens_per_s'] / 1000:.1f}",
                    f"{r['ms_per_step']:.2f}",
                    _fmt(r.get("peak_mib"), ".0f"),
                ]
            else:
                cells = [r.get("status", "not run"), "", ""]
            lines.append(
                f"| {r['model']} | {r['batch']} | {r['hidden']} | {r['T']} | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")
    for step, error in (results.get("errors") or {}).items():
        lines.append(f"Step `{step}` failed: {error}")
    return "\n".join(lines).rstrip() + "\n"


def _fmt(value, spec: str) -> str:
    return "?" if value is None else format(value, spec)


def merge(results_path: Path, target: Path, force: bool = False) -> None:
    """Replace section 6 of ``target`` with the section made from ``results_path``."""
    results = json.loads(results_path.read_text())
    if results.get("dry_run") and not force:
        raise SystemExit(f"{results_path} is a dry run's; its figures are not measurements")
    text = target.read_text()
    section = markdown(results)
    match = re.search(rf"^{re.escape(SECTION)}\n.*?(?=^## )", text, flags=re.M | re.S)
    if match is None:
        raise SystemExit(f"{target} has no '{SECTION}' section to replace")
    target.write_text(text[: match.start()] + section + "\n\n" + text[match.end() :])
    print(f"wrote section 6 of {target} from {results_path}")


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--out", help="results folder (default $OUT, else outputs/gpu_check)")
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"comma-separated subset of {','.join(STEPS)} (run in that order)",
    )
    parser.add_argument(
        "--shakespeare",
        default="",
        metavar="OVERRIDES",
        help="more overrides for the Shakespeare run, e.g. 'model.hidden_size=512'",
    )
    parser.add_argument("--merge", metavar="RESULTS_JSON", help="write its section into --into")
    parser.add_argument("--into", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--force", action="store_true", help="--merge a dry run's results too")
    args = parser.parse_args(argv)
    if args.merge:
        merge(Path(args.merge), Path(args.into), args.force)
        return 0

    start = time.monotonic()
    out = Path(args.out or os.environ.get("OUT") or ROOT / "outputs" / "gpu_check")
    sizes = Sizes(args.dry_run)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run scripts/gpu_check.sh --dry-run for the CPU's rehearsal")
        return 2
    results: dict = {"dry_run": args.dry_run, "argv": sys.argv[1:], "errors": {}}
    results["environment"] = environment()
    out.mkdir(parents=True, exist_ok=True)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown step(s) {unknown}; choose from {list(STEPS)}")

    def left() -> float:
        return sizes.budget - (time.monotonic() - start)

    def save() -> None:
        results["total_s"] = round(time.monotonic() - start, 1)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (out / "gpu_check.md").write_text(markdown(results))

    for step in [s for s in STEPS if s in steps]:
        print(f"[{time.monotonic() - start:6.1f} s] {step}", flush=True)
        try:
            if step == "tests":
                results[step] = run_tests(out, sizes)
            elif step == "shakespeare":  # the clock's 3 minutes, less if the tests ran long
                seconds = int(max(10, min(sizes.shakespeare_seconds, left() - 150)))
                results[step] = shakespeare(out, sizes, seconds, args.shakespeare.split())
            elif step == "names":
                results[step] = names(out, sizes, max(30.0, min(sizes.train_timeout, left() - 30)))
            elif step == "throughput":  # whatever time is left, up to its own budget
                results[step] = throughput(
                    out, sizes, max(5.0, min(sizes.throughput_budget, left()))
                )
        except Exception as e:  # noqa: BLE001 - one step's failure must not cost the others
            results["errors"][step] = f"{type(e).__name__}: {e}"
        save()
    print(markdown(results))
    print(f"results in {out}")
    failed = results["errors"] or any(
        results.get(s, {}).get("returncode") not in (0, None) or results.get(s, {}).get("timed_out")
        for s in ("tests", "names", "shakespeare")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
