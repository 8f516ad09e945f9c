"""Scan models against the fused layers: forward + backward time and memory saved for backward.

    python scripts/benchmark_scan.py                        # T = 256, 1024, 4096; prints markdown
    python scripts/benchmark_scan.py --lengths 64 --repeats 1 --batch 4   # seconds-long check

Batch 32, hidden 128, one layer, float32, on the CPU threads torch is given. Every contender runs
in this one process, alternating, ``--repeats`` times per length; the table gives medians and the
ratio to ``nn.GRU`` at the same length (time over the GRU's time: below 1 is faster). "Saved for
backward" sums the tensors autograd keeps for the backward pass (inputs, activations and the
weights it reads), the memory a training step holds until its backward.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from rnnlab.nets.modern import ModernStack

HIDDEN = 128


def contenders(hidden: int) -> dict[str, tuple[nn.Module, dict]]:
    torch.manual_seed(0)
    return {
        "nn.GRU (fused)": (nn.GRU(hidden, hidden, batch_first=True), {}),
        "nn.LSTM (fused)": (nn.LSTM(hidden, hidden, batch_first=True), {}),
        "minGRU, log-space scan": (ModernStack("mingru", hidden, hidden), {}),
        "minGRU, step by step": (ModernStack("mingru", hidden, hidden), {"scan": "loop"}),
        "minLSTM, log-space scan": (ModernStack("minlstm", hidden, hidden), {}),
        "LRU (64 modes), FFT scan": (ModernStack("lru", hidden, hidden, state_size=64), {}),
        "LRU (64 modes), step by step": (
            ModernStack("lru", hidden, hidden, state_size=64),
            {"scan": "loop"},
        ),
        "S4D (16 modes/channel), FFT": (ModernStack("s4d", hidden, hidden, state_size=16), {}),
        "IndRNN (step by step)": (ModernStack("indrnn", hidden, hidden), {}),
    }


def step(module: nn.Module, kwargs: dict, x: torch.Tensor) -> tuple[float, int]:
    """Seconds for one forward + backward, and the bytes autograd saved for the backward."""
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    module.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = module(x, **kwargs)
    out.sum().backward()
    return time.perf_counter() - start, saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="256,1024,4096")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="", help="comma-separated name parts to keep")
    args = parser.parse_args(argv)
    lengths = [int(t) for t in args.lengths.split(",")]
    nets = contenders(HIDDEN)
    keep = [k.strip() for k in args.models.split(",") if k.strip()]
    if keep:
        nets = {
            n: v for n, v in nets.items() if n.startswith("nn.GRU") or any(k in n for k in keep)
        }
    print(
        f"Forward + backward, batch {args.batch}, hidden {HIDDEN}, one layer, float32, "
        f"{torch.get_num_threads()} CPU thread(s), torch {torch.__version__}; medians of "
        f"{args.repeats}, ratio = time / nn.GRU's time at the same T.\n"
    )
    print(
        "| model | "
        + " | ".join(f"T={t} s (ratio)" for t in lengths)
        + " | saved for backward, MB at T="
        + str(lengths[-1])
        + " |"
    )
    print("|---|" + "---|" * (len(lengths) + 1))
    results: dict[str, dict[int, tuple[float, int]]] = {name: {} for name in nets}
    for t in lengths:
        x = torch.randn(args.batch, t, HIDDEN)
        for module, kwargs in nets.values():  # warm-up
            step(module, kwargs, x[:, : min(t, 16)])
        times: dict[str, list[float]] = {name: [] for name in nets}
        memory: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, (module, kwargs) in nets.items():
                seconds, saved = step(module, kwargs, x)
                times[name].append(seconds)
                memory[name] = saved
        for name in nets:
            results[name][t] = (statistics.median(times[name]), memory[name])
    for name in nets:
        cells = []
        for t in lengths:
            base = results["nn.GRU (fused)"][t][0]
            seconds = results[name][t][0]
            cells.append(f"{seconds:.3f} ({seconds / base:.2f}x)")
        mb = results[name][lengths[-1]][1] / 2**20
        print(f"| {name} | " + " | ".join(cells) + f" | {mb:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
