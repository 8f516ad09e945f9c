"""Tiny Shakespeare: stateful streams (truncated BPTT) against stateless chunks and a plain loop.

    python scripts/bench/chars.py --minutes 30 --out outputs/bench_chars
    python scripts/bench/chars.py --minutes 0.3 --out /tmp/c --tiny   # a seconds-long smoke run

Three arms train the same net (``experiment=shakespeare``: a 2-layer LSTM, 256 units, Adam at
0.003, gradients clipped at norm 1, batches of 64 x 128 characters) from the same seed, each in
its own one-thread process, all three at once, so that the machine's load falls on each alike:

- ``stateful``: rnnlab, ``data.stateful=true`` (64 streams, the state carried across batches);
- ``stateless``: rnnlab, shuffled 128-character chunks, each from a zero state;
- ``plain``: a plain PyTorch loop over the same 64 streams carrying its state (as PyTorch's
  word_language_model does), the same rnnlab net, optimizer and clipping.

Each validates four times an epoch, stateful arms on the validation streams (state carried),
the stateless arm on the validation chunks, and records validation loss against seconds since
the arm started. ``summary.md`` gives each arm's time to 1.7 nats per character and its best
validation loss within the budget; the stateful checkpoint then generates a sample.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TARGET = 1.7  # nats per character
ARMS = ("stateful", "stateless", "plain")
CHECKS_PER_EPOCH = 4
TINY_BATCHES = 20  # --tiny: training batches an epoch (and a small net, short chunks)


def overrides(arm: str, tiny: bool) -> list[str]:
    """The rnnlab run of an arm, as ``python train.py`` arguments."""
    extra = [
        "model.hidden_size=32",
        "data.seq_len=32",
        f"+trainer.limit_train_batches={TINY_BATCHES}",
        "+trainer.limit_val_batches=2",
    ]
    return [
        "experiment=shakespeare",
        f"data.stateful={str(arm == 'stateful').lower()}",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1000",
        "trainer.min_epochs=0",  # else Lightning finishes the first epoch before it stops
        f"trainer.val_check_interval={1 / CHECKS_PER_EPOCH}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "callbacks.early_stopping=null",
        "test=false",
        *(extra if tiny else []),
    ]


def compose(args: list[str], output_dir: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from rnnlab.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("train", overrides=args)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
    return cfg


def run_rnnlab(arm: str, seconds: float, out: Path, tiny: bool) -> None:
    import lightning as L

    from rnnlab.train import train

    records = out / f"{arm}.jsonl"
    start = time.perf_counter()

    class Record(L.Callback):
        """Validation loss against seconds; stops the run once the budget is spent."""

        def on_validation_end(self, trainer, pl_module) -> None:  # after the task logged
            if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
                return
            row = {
                "seconds": time.perf_counter() - start,
                "step": trainer.global_step,
                "val_loss": float(trainer.callback_metrics["val/loss"]),
            }
            with records.open("a") as f:
                f.write(json.dumps(row) + "\n")

        def on_train_batch_end(self, trainer, *args) -> None:
            if time.perf_counter() - start > seconds:
                trainer.should_stop = True

    train(compose(overrides(arm, tiny), out / arm), extra_callbacks=[Record()])


def run_plain(seconds: float, out: Path, tiny: bool) -> None:
    """The same net over the same streams in a plain PyTorch loop that carries the state."""
    import torch
    import torch.nn.functional as F

    from rnnlab.data import CharsDataModule
    from rnnlab.nets import RecurrentNet

    start = time.perf_counter()
    cfg = compose(overrides("stateful", tiny), out / "plain")
    d, m = cfg.data, cfg.model
    torch.manual_seed(cfg.seed)
    dm = CharsDataModule(
        d.path, d.seq_len, d.val_fraction, d.test_fraction, d.batch_size, stateful=True
    )
    dm.setup()
    size = len(dm.vocab)
    net = RecurrentNet(
        size,
        "lstm",
        vocab_size=size,
        embedding_dim=m.embedding_dim,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        dropout=m.dropout,
        output_mode="sequence",
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optimizer.lr)
    streams = d.batch_size

    def batches(split: str):
        t = dm.splits[split].tensors  # (batches * streams, seq_len)
        for i in range(len(t["x"]) // streams):
            yield t["x"][i * streams : (i + 1) * streams], t["y"][i * streams : (i + 1) * streams]

    def run(x, state):
        out, state = net.rnn(net.encoder(x), state)  # (batch, seq, hidden)
        return net.head(out), state

    def validate() -> float:
        net.eval()
        total, count, state = 0.0, 0, None
        with torch.no_grad():
            for x, y in batches("val"):
                logits, state = run(x, state)
                total += float(F.cross_entropy(logits.reshape(-1, size), y.reshape(-1))) * len(x)
                count += len(x)
        net.train()
        return total / count

    n_batches = len(dm.splits["train"]) // streams
    if tiny:
        n_batches = TINY_BATCHES
    every = max(1, n_batches // CHECKS_PER_EPOCH)
    step = 0
    while time.perf_counter() - start <= seconds:
        state = None  # each epoch from zeros
        for i, (x, y) in zip(range(n_batches), batches("train"), strict=False):
            if state is not None:
                state = tuple(s.detach() for s in state)
            logits, state = run(x, state)
            loss = F.cross_entropy(logits.reshape(-1, size), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.trainer.gradient_clip_val)
            optimizer.step()
            step += 1
            if (i + 1) % every == 0 or i + 1 == n_batches:
                row = {"seconds": time.perf_counter() - start, "step": step, "val_loss": validate()}
                with (out / "plain.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
            if time.perf_counter() - start > seconds:
                break


def cross_validation(ckpt: Path) -> dict[str, float]:
    """A checkpoint's validation loss read both ways: chunks from zeros, streams state carried."""
    import torch
    import torch.nn.functional as F

    from rnnlab.data import CharsDataModule
    from rnnlab.predict import load

    cfg, datamodule, task = load(ckpt)
    net, d, losses = task.net.eval(), cfg.data, {}
    for name, stateful in (("chunks", False), ("streams", True)):
        dm = CharsDataModule(
            d.path, d.seq_len, d.val_fraction, d.test_fraction, d.batch_size, stateful=stateful
        )
        dm.vocab = datamodule.vocab
        dm.setup()
        t, total, count, state = dm.splits["val"].tensors, 0.0, 0, None
        with torch.no_grad():
            for i in range(0, len(t["x"]), d.batch_size):
                x, y = t["x"][i : i + d.batch_size], t["y"][i : i + d.batch_size]
                if stateful:
                    logits, state = net.carry(x, state)
                else:
                    logits = net(x)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
                total, count = total + float(loss) * y.numel(), count + y.numel()
        losses[name] = total / count
    return losses


def summarize(out: Path, minutes: float) -> str:
    lines = [
        f"Budget: {minutes:g} minutes per arm, the three arms at once, one thread each.",
        "",
        f"| arm | validations | steps | first val/loss <= {TARGET} | best val/loss "
        f"in {minutes:g} min | (at) |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        path = out / f"{arm}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        rows = [r for r in rows if r["seconds"] <= minutes * 60]  # within the budget only
        reached = next((r for r in rows if r["val_loss"] <= TARGET), None)
        best = min(rows, key=lambda r: r["val_loss"], default=None)
        lines.append(
            f"| {arm} | {len(rows)} | {rows[-1]['step'] if rows else 0} | "
            + (
                f"{reached['seconds'] / 60:.1f} min (step {reached['step']})"
                if reached
                else "not reached"
            )
            + " | "
            + (f"{best['val_loss']:.4f} | {best['seconds'] / 60:.1f} min" if best else "- | -")
            + " |"
        )
    lines += [
        "",
        "Each rnnlab arm's best.ckpt, validation loss read both ways over the validation split:",
        "",
        "| arm | chunks of seq_len from zeros | streams, state carried |",
        "|---|---|---|",
    ]
    for arm in ("stateful", "stateless"):
        ckpt = out / arm / "checkpoints" / "best.ckpt"
        if ckpt.exists():
            both = cross_validation(ckpt)
            lines.append(f"| {arm} | {both['chunks']:.4f} | {both['streams']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per arm")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_chars"))
    parser.add_argument("--tiny", action="store_true", help="a small net: a smoke run")
    parser.add_argument("--arm", choices=ARMS, help="run one arm here (the script starts three)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60
    if args.arm == "plain":
        return run_plain(seconds, args.out, args.tiny)
    if args.arm:
        return run_rnnlab(args.arm, seconds, args.out, args.tiny)
    for arm in ARMS:
        (args.out / f"{arm}.jsonl").unlink(missing_ok=True)
        shutil.rmtree(args.out / arm, ignore_errors=True)  # an older run's checkpoints
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    common = ["--minutes", str(args.minutes), "--out", str(args.out)]
    common += ["--tiny"] if args.tiny else []
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--arm", arm, *common],
            env=env,
            stdout=(args.out / f"{arm}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for arm in ARMS
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(
            f"an arm failed ({dict(zip(ARMS, codes, strict=True))}): see {args.out}/*.log"
        )
    summary = summarize(args.out, args.minutes)
    from rnnlab.predict import generate

    ckpt = args.out / "stateful" / "checkpoints" / "best.ckpt"
    if ckpt.exists():
        sample = generate(ckpt, prompt="ROMEO:", length=200, temperature=0.8, seed=0)
        summary += f"\nThe stateful arm's best.ckpt, from 'ROMEO:':\n\n```\nROMEO:{sample}\n```\n"
    (args.out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
