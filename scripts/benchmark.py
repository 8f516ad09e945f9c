"""Benchmark rnnlab against plain PyTorch and the tutorials; write the tables to BENCHMARKS.md.

    python scripts/benchmark.py                      # every section, report to BENCHMARKS.md
    python scripts/benchmark.py --sections overhead,startup --repeats 5
    python scripts/benchmark.py --tiny --out /tmp/b.md   # seconds-long smoke run (tests use it)

Each section runs its contenders in the same process, alternating, several repeats, and reports
medians and ratios: absolute timings move with the machine's load, ratios much less.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

NOTES = "## Reading these numbers"  # from this heading on, BENCHMARKS.md is kept as written
SECTIONS = ("overhead", "names", "fused", "scaling", "startup", "gpu", "options")


def median(values: list[float]) -> float:
    return statistics.median(values)


class Report:
    """Markdown tables collected section by section."""

    def __init__(self, previous: str = "") -> None:
        self.parts: list[str] = []
        self.previous = previous  # the report this run replaces, for what it keeps

    def section(self, title: str, text: str = "") -> None:
        self.parts.append(f"\n## {title}\n")
        if text:
            self.parts.append(text.strip() + "\n")

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.parts.append("| " + " | ".join(header) + " |")
        self.parts.append("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            self.parts.append("| " + " | ".join(row) + " |")
        self.parts.append("")
        print("\n".join(self.parts[-len(rows) - 3 :]), flush=True)

    def text(self, text: str) -> None:
        self.parts.append(text.strip() + "\n")


# ---------------------------------------------------------------- 1. framework overhead


def overhead(report: Report, repeats: int, tiny: bool) -> None:
    import torch
    from bench.harness import (
        AverageDataModule,
        Stopwatch,
        compose_run,
        parity_net,
        plain_loop,
        stock_lightning_seconds,
    )

    from rnnlab.train import train

    epochs = 2 if tiny else 10
    n_train = 60 if tiny else 300

    def rnnlab_cfg(out: Path, *extra: str):
        overrides = [
            "model=lstm",
            "model.hidden_size=20",
            "optimizer.lr=0.02",
            "trainer.accelerator=cpu",
            f"trainer.max_epochs={epochs}",
            "trainer.gradient_clip_val=null",
            "test=false",
            *extra,
        ]
        data = {
            "_target_": "bench.harness.AverageDataModule",
            "n_train": n_train,
            "n_val": 60,
            "seq_len": 100,
            "batch_size": 30,
            "seed": 0,
        }
        return compose_run(overrides, out, data=data)

    def run_rnnlab(*extra: str) -> tuple[float, int]:
        watch = Stopwatch()
        with tempfile.TemporaryDirectory() as tmp:
            cfg = rnnlab_cfg(Path(tmp), *extra)
            train(cfg, extra_callbacks=[watch])
            steps = epochs * -(-n_train // 30)
        return watch.seconds, steps

    dm = AverageDataModule(n_train=n_train)
    dm.setup()
    data = {s: dm.splits[s].tensors for s in ("train", "val")}

    def run_plain() -> tuple[float, int]:
        net = parity_net()
        return plain_loop(net, data, epochs, 30, 0.02, torch.nn.functional.mse_loss)

    def run_stock(extras_on: bool) -> tuple[float, int]:
        with tempfile.TemporaryDirectory() as tmp:
            return stock_lightning_seconds(Path(tmp), epochs, n_train, extras_on)

    plain = "plain PyTorch loop (train + val each epoch)"
    stock_on = "stock Lightning, per-step `self.log`, its default logger, progress bar, checkpoint"
    defaults = "rnnlab, defaults (TensorBoard, rich progress bar, checkpoints, early stopping)"
    contenders = {
        plain: run_plain,
        defaults: run_rnnlab,
        "rnnlab, logger/progress bar/checkpoints off": lambda: run_rnnlab(
            "logger=none",
            "callbacks=none",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "+trainer.enable_checkpointing=false",
        ),
        stock_on: lambda: run_stock(True),
        "stock Lightning, logger/progress bar/checkpoints off": lambda: run_stock(False),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():  # alternate the contenders within each repeat
            seconds, steps = fn()
            times[name].append(seconds / steps * 1000)
    # each repeat's own ratio to the plain loop of the same repeat: the machine's drift between
    # repeats (the plain loop itself moves by 10-30%) cancels out of it
    ratios = {k: [t / p for t, p in zip(v, times[plain], strict=True)] for k, v in times.items()}
    report.section(
        "1. Framework overhead",
        f"Lightning's parity model: LSTM 10->20 + Linear 20->5 at every step, {n_train} "
        f"sequences x 100 steps x 10 features, batch 30, Adam 0.02, {epochs} epochs with a "
        f"60-sequence validation pass per epoch in every loop, no gradient clipping. "
        f"Milliseconds per training step (validation included), median of {repeats}; the "
        f"ratio is the median of each repeat's ratio to that repeat's plain loop (the "
        f"contenders alternate within a repeat), with its range.",
    )
    report.table(
        ["loop", "ms / step", "ratio to plain", "ratios' range", "runs' range, ms"],
        [
            [
                name,
                f"{median(v):.2f}",
                f"{median(ratios[name]):.2f}x",
                f"{min(ratios[name]):.2f}-{max(ratios[name]):.2f}x",
                f"{min(v):.2f}-{max(v):.2f}",
            ]
            for name, v in times.items()
        ],
    )
    ratio = median(ratios[defaults])
    verdict = "met" if ratio <= 1.25 else f"missed by {ratio - 1.25:.2f}x"
    stock = median(ratios[stock_on])
    below = "met" if ratio < stock else "missed"
    if tiny:
        verdict = below = "not judged at --tiny sizes"
    report.text(
        f"Goals: rnnlab's defaults within 1.25x of the plain loop: {verdict}; below stock "
        f"Lightning's defaults ({ratio:.2f}x against {stock:.2f}x): {below}."
    )
    names_throughput(report, repeats, tiny)


def names_throughput(report: Report, repeats: int, tiny: bool) -> None:
    from bench.names import names_throughput_runs

    rows, ratio, where = names_throughput_runs(max(1, min(repeats, 5)), tiny)
    report.text(
        f"The names LSTM recipe (`experiment=names model=lstm`, {where}): one epoch of training "
        "and its validation, rnnlab with its defaults against a plain loop over the same "
        "batches, net, optimizer and gradient clipping, after one untimed run of each; the two "
        "run back to back in alternating order. Training names a second, median of "
        f"{max(1, min(repeats, 5))}; the ratio is the median of the repeats' own ratios."
    )
    report.table(["loop", "names / s", "ratio to plain", "runs' range, names / s"], rows)
    verdict = "met" if ratio >= 0.97 else f"missed by {0.97 - ratio:.2f}"
    if tiny:
        verdict = "not judged at --tiny sizes"
    report.text(f"Goal: at least 0.97 of the plain loop's throughput: {verdict} ({ratio:.2f}).")


# ---------------------------------------------------------------- 3. fused vs cell, padded vs packed


def fused(report: Report, repeats: int, tiny: bool) -> None:
    import torch
    from bench.harness import forward_backward_seconds

    from rnnlab.nets import CharRNN, RecurrentNet

    batch, seq_len, hidden = (8, 12, 16) if tiny else (64, 20, 128)
    torch.manual_seed(0)
    x = torch.randint(1, 60, (batch, seq_len))
    lengths = torch.randint(3, seq_len + 1, (batch,))
    lengths[0] = seq_len
    x = x.masked_fill(torch.arange(seq_len)[None, :] >= lengths[:, None], 0)

    nets = {
        "`lstm` (fused nn.LSTM, padded)": RecurrentNet(
            2, "lstm", vocab_size=60, hidden_size=hidden
        ),
        "`lstm` packed (pack_padded_sequence)": RecurrentNet(
            2, "lstm", vocab_size=60, hidden_size=hidden, pack=True
        ),
        "`rnn` (fused nn.RNN, padded)": RecurrentNet(2, "rnn", vocab_size=60, hidden_size=hidden),
        "`rnn` packed": RecurrentNet(2, "rnn", vocab_size=60, hidden_size=hidden, pack=True),
        "`char_rnn` (the tutorial cell, step by step)": CharRNN(
            2, vocab_size=60, hidden_size=hidden
        ),
    }
    try:
        from rnnlab.nets import UnrolledNet  # noqa: F401  (cell-by-cell nets, when present)
    except ImportError:
        UnrolledNet = None
    if UnrolledNet is not None:
        nets["`lstm_cell` (nn.LSTMCell, step by step)"] = UnrolledNet(
            output_size=2, cell="lstm", vocab_size=60, hidden_size=hidden
        )
    times: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(repeats):
        for name, net in nets.items():
            times[name].append(forward_backward_seconds(net, x, lengths, repeats=3) * 1000)
    base = median(times["`lstm` (fused nn.LSTM, padded)"])
    report.section(
        "3. Fused against cell-by-cell, padded against packed",
        f"Forward + backward of one batch of {batch} token sequences of length 3..{seq_len} "
        f"(names-like), hidden {hidden}, median of {repeats} x 3 passes.",
    )
    report.table(
        ["net", "ms / batch", "ratio to fused padded LSTM"],
        [[k, f"{median(v):.2f}", f"{median(v) / base:.2f}x"] for k, v in times.items()],
    )


# ---------------------------------------------------------------- 4. scaling


def scaling(report: Report, repeats: int, tiny: bool) -> None:
    import torch
    from bench.harness import forward_backward_seconds

    from rnnlab.nets import RecurrentNet

    n_seq = 64 if tiny else 512
    lengths = [32, 64] if tiny else [32, 64, 128, 256, 512, 1024]
    rows = []
    torch.manual_seed(0)
    for batch in [32] if tiny else [32, 128]:
        for hidden in [32] if tiny else [64, 256]:
            net = RecurrentNet(1, "lstm", input_size=8, hidden_size=hidden)
            per_step = []
            for T in lengths:
                x = torch.randn(batch, T, 8)
                seconds = forward_backward_seconds(net, x, None, repeats=repeats)
                epoch = seconds * n_seq / batch
                per_step.append(epoch / T)
                rows.append(
                    [
                        str(batch),
                        str(hidden),
                        str(T),
                        f"{epoch * 1000:.1f}",
                        f"{epoch / T * 1e6:.1f}",
                    ]
                )
            growth = per_step[-1] / per_step[0]
            rows.append(
                [
                    str(batch),
                    str(hidden),
                    "growth",
                    "",
                    f"per-step cost x{growth:.2f} from T={lengths[0]} to T={lengths[-1]}",
                ]
            )
    report.section(
        "4. Scaling with sequence length, hidden size and batch",
        f"LSTM, 8 input features, forward + backward over an epoch of {n_seq} sequences. "
        "Linear growth in length shows as a flat time per step.",
    )
    report.table(["batch", "hidden", "T", "ms / epoch", "us per time step"], rows)


# ---------------------------------------------------------------- 5. start-up


def startup(report: Report, repeats: int, tiny: bool) -> None:
    from bench.harness import command_seconds, python_command

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as tmp:
        commands = {
            '`python -c "import torch"`': python_command("-c", "import torch"),
            "`python train.py --help`": python_command("train.py", "--help"),
            "`python train.py --cfg job`": python_command("train.py", "--cfg", "job"),
            "`python train.py debug=fast`": python_command(
                "train.py", "debug=fast", f"hydra.run.dir={tmp}/fast", "data.n_train=256"
            ),
        }
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(max(1, repeats)):
            for name, cmd in commands.items():
                times[name].append(command_seconds(cmd, repeats=1, env=env))
    base = median(times['`python -c "import torch"`'])
    report.section("5. Start-up", f"Wall seconds of whole processes, median of {max(1, repeats)}.")
    report.table(
        ["command", "seconds", "ratio to import torch"],
        [[k, f"{median(v):.2f}", f"{median(v) / base:.2f}x"] for k, v in times.items()],
    )


# ---------------------------------------------------------------- 7. compile and bf16


def options(report: Report, repeats: int, tiny: bool) -> None:
    import torch
    from bench.harness import train_step_seconds

    from rnnlab.nets import RecurrentNet

    batch, seq_len, hidden = (8, 12, 16) if tiny else (64, 12, 128)
    torch.manual_seed(0)
    x = torch.randint(1, 60, (batch, seq_len))
    y = torch.randint(0, 18, (batch,))

    def make(**kwargs):
        torch.manual_seed(0)
        return RecurrentNet(18, "lstm", vocab_size=60, hidden_size=hidden, **kwargs)

    compiled = make()
    compiled.compile(dynamic=True)
    contenders = {
        "eager, fp32 (default)": (make(), False),
        "`compile=true` (torch.compile, dynamic shapes)": (compiled, False),
        "`trainer.precision=bf16-mixed` (CPU autocast)": (make(), True),
    }
    train_step_seconds(compiled, x, y, bf16=False, repeats=1)  # compile outside the timing
    times: dict[str, list[float]] = {k: [] for k in contenders}
    failures: dict[str, str] = {}
    for _ in range(repeats):
        for name, (net, bf16) in contenders.items():
            if name in failures:
                continue
            try:
                times[name].append(train_step_seconds(net, x, y, bf16=bf16, repeats=5) * 1000)
            except RuntimeError as e:  # e.g. no bf16 LSTM kernel on this processor
                failures[name] = str(e).strip().splitlines()[0].split(". ")[0].rstrip(".")
    base = median(times["eager, fp32 (default)"])
    report.section(
        "7. torch.compile and bf16 autocast",
        f"One Adam training step of a names-sized LSTM (batch {batch}, length {seq_len}, hidden "
        f"{hidden}, 60 symbols, 18 classes), median of {repeats} x 5 steps. Both stay options, "
        "off by default, unless they win here.",
    )
    report.table(
        ["variant", "ms / step", "ratio to eager fp32"],
        [
            [k, f"fails: {failures[k]}", ""]
            if k in failures
            else [k, f"{median(v):.2f}", f"{median(v) / base:.2f}x"]
            for k, v in times.items()
        ],
    )


# ---------------------------------------------------------------- 2. names


def names(report: Report, repeats: int, tiny: bool) -> None:
    try:
        from bench.names import names_section
    except ImportError:
        report.section(
            "2. Names time-to-accuracy", "Not measured: the names data module is absent."
        )
        return
    names_section(report, repeats, tiny)


# ---------------------------------------------------------------- 6. GPU


def gpu(report: Report, repeats: int, tiny: bool) -> None:
    import torch

    if not torch.cuda.is_available():
        kept = measured_gpu_section(report.previous)
        if kept:  # figures from scripts/gpu_check.sh on a GPU machine: a CPU run keeps them
            report.parts.append("\n" + kept)
            return
        report.section(
            "6. GPU",
            "Not measured in this run: no CUDA device on this machine. On one, "
            "`scripts/gpu_check.sh` measures it and `python scripts/gpu_check.py --merge "
            "<results.json>` writes this section.",
        )
        return
    report.section(
        "6. GPU",
        f"A CUDA device is present ({torch.cuda.get_device_name(0)}); the sections above ran on "
        "the CPU as everywhere, so that their numbers compare across machines.",
    )


def measured_gpu_section(text: str) -> str:
    """Section 6 of an earlier BENCHMARKS.md when ``scripts/gpu_check.sh`` wrote it, else ''."""
    import re

    match = re.search(r"^## 6\. GPU\n.*?(?=^## )", text, flags=re.M | re.S)
    if match and "scripts/gpu_check.sh" in match.group(0) and "A dry run" not in match.group(0):
        return match.group(0).rstrip() + "\n"
    return ""


def machine_description() -> str:
    import lightning
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return (
        f"- Machine: {cpu}, {os.cpu_count()} cores ({threads} torch threads), "
        f"{platform.system()} {platform.release()}\n"
        f"- Python {platform.python_version()}, torch {torch.__version__}, "
        f"lightning {lightning.__version__}\n"
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"- Command: `python scripts/benchmark.py {' '.join(sys.argv[1:])}`"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--out", default="BENCHMARKS.md")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    from rnnlab.train import quiet_lightning_logging

    quiet_lightning_logging()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("rnnlab").setLevel(logging.ERROR)

    out = Path(args.out)
    report = Report(out.read_text() if out.is_file() else "")
    start = time.time()
    for name in SECTIONS:
        if name in chosen:
            globals()[name](report, args.repeats, args.tiny)
    header = (
        "# Benchmarks\n\nMade by `scripts/benchmark.py`; ratios come from one process run, "
        "alternating the contenders.\n\n"
        + machine_description()
        + f"\n- Total benchmark time: {time.time() - start:.0f} s\n"
    )
    notes = ""  # the hand-written reading of the numbers survives a re-run
    if out.is_file() and NOTES in out.read_text():
        notes = "\n" + NOTES + out.read_text().split(NOTES, 1)[1].rstrip() + "\n"
    out.write_text(header + "\n".join(report.parts) + "\n" + notes)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
