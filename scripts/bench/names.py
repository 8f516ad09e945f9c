"""Names time-to-accuracy: the PyTorch tutorial's one-name-at-a-time recipe against rnnlab.

``tutorial_recipe`` is the tutorial's training loop as published (its char-RNN cell on one-hot
ASCII letters, 128 hidden units, NLLLoss, plain SGD at 0.005 applied by hand, a random language
then a random name of it at every step, 100k steps), trained on rnnlab's train split and scored
on its test split. ``names_section`` writes the BENCHMARKS.md section.
"""

from __future__ import annotations

import json
import os
import random
import string
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch import nn

from rnnlab.config import ROOT
from rnnlab.data.names import normalize, write_toy_names
from rnnlab.nets import CharRNNCell

TUTORIAL_LETTERS = string.ascii_letters + " .,;'"


def shared_names_dir() -> Path:
    """The real names set: ``$RNNLAB_NAMES_DIR`` or ``../shared/data/names`` beside the project."""
    return Path(os.environ.get("RNNLAB_NAMES_DIR", ROOT.parent / "shared" / "data" / "names"))


# ---------------------------------------------------------------- the tutorial, as published


def letter_to_index(letter: str) -> int:
    return TUTORIAL_LETTERS.find(letter)


def line_to_tensor(line: str) -> torch.Tensor:
    """The tutorial's encoding: (len, 1, 57) one-hot ASCII letters."""
    tensor = torch.zeros(len(line), 1, len(TUTORIAL_LETTERS))
    for i, letter in enumerate(line):
        tensor[i][0][letter_to_index(letter)] = 1
    return tensor


def to_ascii(name: str) -> str:
    """The tutorial's ``unicodeToAscii``: fold accents, drop what is not a tutorial letter."""
    return "".join(c for c in normalize(name, "fold") if c in TUTORIAL_LETTERS)


def tutorial_recipe(
    train: list[tuple[str, int]],
    test: list[tuple[str, int]],
    num_classes: int,
    steps: int = 100_000,
    lr: float = 0.005,
    eval_every: int = 5000,
    seed: int = 0,
) -> dict:
    """Train the tutorial's char-RNN one name at a time; returns accuracy, seconds and a curve.

    The curve holds (training seconds, test accuracy) every ``eval_every`` steps; scoring is not
    counted as training time.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    by_class: dict[int, list[str]] = {}
    for name, c in train:
        name = to_ascii(name)
        if name:
            by_class.setdefault(c, []).append(name)
    categories = sorted(by_class)
    test_names = [(to_ascii(n), c) for n, c in test]
    test_tensors = [(line_to_tensor(n), c) for n, c in test_names if n]
    rnn = CharRNNCell(len(TUTORIAL_LETTERS), 128, num_classes)
    criterion = nn.NLLLoss()

    def evaluate() -> float:
        correct = 0
        with torch.no_grad():
            for line_tensor, c in test_tensors:
                hidden = rnn.init_hidden()
                for i in range(line_tensor.size(0)):
                    output, hidden = rnn(line_tensor[i], hidden)
                correct += int(output.argmax(1)) == c
        return correct / len(test_tensors)

    curve: list[tuple[float, float]] = []
    seconds = 0.0
    start = time.perf_counter()
    for step in range(1, steps + 1):
        category = rng.choice(categories)  # a random language, then a random name of it
        line = rng.choice(by_class[category])
        category_tensor = torch.tensor([category], dtype=torch.long)
        line_tensor = line_to_tensor(line)
        hidden = rnn.init_hidden()
        rnn.zero_grad()
        for i in range(line_tensor.size()[0]):
            output, hidden = rnn(line_tensor[i], hidden)
        loss = criterion(output, category_tensor)
        loss.backward()
        for p in rnn.parameters():
            p.data.add_(p.grad.data, alpha=-lr)
        if step % eval_every == 0 or step == steps:
            seconds += time.perf_counter() - start
            curve.append((seconds, evaluate()))
            start = time.perf_counter()
    return {"acc": curve[-1][1], "seconds": seconds, "curve": curve, "steps": steps}


# ---------------------------------------------------------------- rnnlab, time to accuracy


class TimeToAccuracy(L.Callback):
    """Scores held-out tensors every ``every`` training steps; stops once ``target`` is passed.

    Records the training seconds (scoring excluded) when accuracy first reaches ``target``.
    """

    def __init__(self, held_out: dict[str, torch.Tensor], target: float, every: int = 20) -> None:
        self.held_out, self.target, self.every = held_out, target, every
        self.seconds = 0.0
        self.reached: float | None = None
        self.curve: list[tuple[float, float]] = []
        self._start = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            self.score(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.reached is None and trainer.global_step % self.every:  # the last, unscored steps
            self.score(trainer, pl_module)

    def score(self, trainer, pl_module) -> None:
        self.seconds += time.perf_counter() - self._start
        acc = self.accuracy(pl_module)
        self.curve.append((self.seconds, acc))
        if self.reached is None and acc >= self.target:
            self.reached = self.seconds
            trainer.should_stop = True
        self._start = time.perf_counter()

    @torch.no_grad()
    def accuracy(self, pl_module) -> float:
        was_training = pl_module.training
        pl_module.eval()
        x, lengths, y = (self.held_out[k].to(pl_module.device) for k in ("x", "lengths", "y"))
        acc = (pl_module(x, lengths).argmax(-1) == y).float().mean().item()
        pl_module.train(was_training)
        return acc


def rnnlab_time_to_accuracy(
    data_dir: Path, target: float, out: Path, overrides: list[str] = (), every: int = 20
) -> dict:
    """Train ``experiment=names`` until its test-split accuracy passes ``target``."""
    from bench.harness import compose_run
    from rnnlab.train import build, train

    overrides = [
        "experiment=names",
        f"data.data_dir={data_dir}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "test=false",
        *overrides,
    ]
    cfg = compose_run(overrides, out)
    dm = build(cfg, "data")  # the run's own split
    dm.setup()
    held_out = dict(dm.splits["test"].tensors)
    watch = TimeToAccuracy(held_out, target, every)
    train(cfg, extra_callbacks=[watch])
    return {"seconds": watch.reached, "curve": watch.curve, "final": watch.curve[-1][1]}


def process_run(data_dir: Path, out: Path, overrides: list[str] = ()) -> tuple[float, dict]:
    """Wall seconds of ``python train.py experiment=names`` start to finish, and its metrics."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    cmd = [
        sys.executable,
        "train.py",
        "experiment=names",
        f"data.data_dir={data_dir}",
        f"hydra.run.dir={out}",
        *overrides,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True, env=env)
    seconds = time.perf_counter() - start
    return seconds, json.loads((out / "metrics.json").read_text())["metrics"]


def names_section(report, repeats: int, tiny: bool) -> None:
    """Section 2 of BENCHMARKS.md: the tutorial against rnnlab on the names set."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = shared_names_dir()
        if tiny or not data_dir.is_dir():
            data_dir = write_toy_names(tmp / "names", per_language=60)
        steps = 600 if tiny else 100_000
        eval_every = 200 if tiny else 5000
        quick = ["trainer.max_epochs=2", "data.batch_size=16"] if tiny else []
        from bench.harness import compose_run
        from rnnlab.train import build

        cfg = compose_run(["experiment=names", f"data.data_dir={data_dir}"], tmp / "split")
        dm = build(cfg, "data")  # experiment=names's own split (seed 42)
        dm.setup()
        records = {
            s: list(zip(dm.texts[s], dm.splits[s].tensors["y"].tolist(), strict=True))
            for s in ("train", "test")
        }
        n_classes = len(dm.class_names)
        runs = 1 if tiny else max(1, min(repeats, 3))  # the tutorial alone takes ~80 s a run
        tutorial, rnnlab, process = [], [], []
        for r in range(runs):
            tutorial.append(
                tutorial_recipe(
                    records["train"],
                    records["test"],
                    n_classes,
                    steps,
                    eval_every=eval_every,
                    seed=r,
                )
            )
            target = tutorial[-1]["acc"]
            rnnlab.append(
                rnnlab_time_to_accuracy(
                    data_dir, target, tmp / f"tta{r}", quick, every=2 if tiny else 20
                )
            )
            # the whole process, stopped once validation accuracy passes the tutorial's
            to_target = [
                f"trainer.val_check_interval={2 if tiny else 20}",
                "trainer.min_epochs=null",
                f"callbacks.early_stopping.stopping_threshold={target}",
            ]
            process.append(process_run(data_dir, tmp / f"target{r}", [*quick, *to_target]))
        best = process_run(data_dir, tmp / "best", quick)  # the whole recipe, once
    _write_section(report, data_dir, tiny, steps, tutorial, rnnlab, process, best)


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def _write_section(report, data_dir, tiny, steps, tutorial, rnnlab, process, best) -> None:
    tut_seconds = _median([t["seconds"] for t in tutorial])
    tut_acc = _median([t["acc"] for t in tutorial])
    reached = [r["seconds"] for r in rnnlab if r["seconds"] is not None]
    rn_seconds = _median(reached) if reached else float("nan")
    proc_seconds = _median([p[0] for p in process])
    proc_acc = _median([p[1].get("test/acc", float("nan")) for p in process])
    best_seconds, best_metrics = best
    where = "a generated two-language folder (--tiny)" if tiny else f"`{data_dir}`"
    report.section(
        "2. Names time-to-accuracy",
        f"Data: {where}, `experiment=names`'s split at seed 42 (every line of the files, "
        f"stratified by language: 15% held out for the test, 5% for validation, the tutorial "
        f"trains on the other 80% as rnnlab does). The "
        f"tutorial's recipe (its char-RNN cell on one-hot ASCII letters, 128 hidden, NLLLoss, "
        f"SGD 0.005 by hand, one class-balanced random name per step, {steps:,} steps) against "
        f"`experiment=names`. Training seconds exclude scoring; the accuracy is on the test "
        f"split. rnnlab's training time is until its test accuracy first reaches the tutorial's "
        f"final accuracy (scored every 20 steps). The whole-process rows time "
        f"`python train.py experiment=names ...` from start to exit (imports, data, training, "
        f"test of the best checkpoint): the first stops once validation accuracy passes the "
        f"tutorial's (`trainer.val_check_interval=20 trainer.min_epochs=null "
        f"callbacks.early_stopping.stopping_threshold=<its accuracy>`), the second is the whole "
        f"recipe. Median of {len(tutorial)} run(s); the whole recipe ran once.",
    )
    rows = [
        [
            "tutorial, one name at a time (training only)",
            f"{tut_seconds:.1f}",
            f"{tut_acc:.3f} (final, {steps:,} steps)",
            "1x",
        ],
        [
            "rnnlab `experiment=names`, training until it passes the tutorial",
            f"{rn_seconds:.2f}",
            f">= {tut_acc:.3f} ({len(reached)}/{len(rnnlab)} runs reached it)",
            f"{tut_seconds / rn_seconds:.0f}x" if reached else "not reached",
        ],
        [
            "`python train.py experiment=names`, stopped at the tutorial's accuracy, whole process",
            f"{proc_seconds:.1f}",
            f"{proc_acc:.3f} test acc",
            f"{tut_seconds / proc_seconds:.1f}x",
        ],
        [
            "`python train.py experiment=names`, the whole recipe, whole process",
            f"{best_seconds:.1f}",
            f"{best_metrics.get('test/acc', float('nan')):.3f} test acc, "
            f"{best_metrics.get('test/f1_macro', float('nan')):.3f} macro F1 (final)",
            f"{tut_seconds / best_seconds:.1f}x",
        ],
    ]
    report.table(["run", "seconds", "accuracy", "speed-up over the tutorial"], rows)
    train_ratio = tut_seconds / rn_seconds if reached else 0.0
    process_ratio = tut_seconds / proc_seconds
    if tiny:
        report.text("Goals: not judged at --tiny sizes.")
    else:
        report.text(
            f"Goals: >= 100x on training time: {_verdict(train_ratio, 100)}; >= 10x on the whole "
            f"process: {_verdict(process_ratio, 10)}."
        )


def _verdict(ratio: float, goal: float) -> str:
    return f"met ({ratio:.0f}x)" if ratio >= goal else f"missed ({ratio:.1f}x)"


# ---------------------------------------------------------------- names throughput (section 1)


def names_throughput_runs(repeats: int, tiny: bool) -> tuple[list[list[str]], float, str]:
    """One epoch of the names LSTM recipe, rnnlab (defaults on) against a plain loop.

    Both train the same net on the same length-bucketed batches with the same optimizer,
    scheduler and gradient clipping, and validate once. Returns table rows, the throughput ratio
    rnnlab / plain, and a description of the data.
    """
    import statistics

    from bench.harness import Stopwatch, compose_run
    from rnnlab.train import build_components, train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = shared_names_dir()
        where = f"`{data_dir.name}` real set"
        if tiny or not data_dir.is_dir():
            data_dir = write_toy_names(tmp / "names", per_language=60)
            where = "a generated two-language folder"
        overrides = [
            "experiment=names",
            "model=lstm",
            f"data.data_dir={data_dir}",
            "trainer.accelerator=cpu",
            "trainer.max_epochs=1",
            "test=false",
            *(["data.batch_size=16", "model.hidden_size=32"] if tiny else []),
        ]

        def config(out: Path):
            return compose_run(overrides, out)

        class Watch(Stopwatch):
            def on_train_start(self, trainer, pl_module) -> None:
                self.n = len(trainer.datamodule.splits["train"])
                super().on_train_start(trainer, pl_module)

        def run_rnnlab(i: int) -> tuple[float, int]:
            watch = Watch()
            train(config(tmp / f"rnnlab{i}"), extra_callbacks=[watch])
            return watch.seconds, watch.n

        def run_plain(i: int) -> tuple[float, int]:
            cfg = config(tmp / f"plain{i}")
            torch.manual_seed(cfg.seed)
            dm, _, net, task = build_components(cfg)
            dm.setup()
            opt = task.configure_optimizers()
            optimizer, scheduler = (opt["optimizer"], opt["lr_scheduler"]["scheduler"])
            clip = cfg.trainer.gradient_clip_val
            start = time.perf_counter()
            net.train()
            for batch in dm.train_dataloader():
                loss = nn.functional.cross_entropy(net(batch["x"], batch["lengths"]), batch["y"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip:
                    nn.utils.clip_grad_norm_(net.parameters(), clip)
                optimizer.step()
            scheduler.step()
            net.eval()  # and one validation pass, scored, as rnnlab's epoch ends with
            correct = 0
            with torch.no_grad():
                for batch in dm.val_dataloader():
                    out = net(batch["x"], batch["lengths"])
                    correct += int((out.argmax(-1) == batch["y"]).sum())
            seconds = time.perf_counter() - start
            return seconds, len(dm.splits["train"])

        contenders = (("plain PyTorch loop", run_plain), ("rnnlab, defaults", run_rnnlab))
        if not tiny:  # one untimed run each first: one-time costs (lazy imports, first kernels)
            for _, fn in contenders:
                fn(-1)
        rates: dict[str, list[float]] = {"plain PyTorch loop": [], "rnnlab, defaults": []}
        for i in range(repeats):
            # back to back, in alternating order, so a change in the machine's load between
            # repeats weighs on both alike
            for name, fn in contenders if i % 2 == 0 else contenders[::-1]:
                seconds, n = fn(i)
                rates[name].append(n / seconds)
    paired = [
        a / b for a, b in zip(rates["rnnlab, defaults"], rates["plain PyTorch loop"], strict=True)
    ]
    ratios = {"plain PyTorch loop": 1.0, "rnnlab, defaults": statistics.median(paired)}
    rows = [
        [
            k,
            f"{statistics.median(v):.0f}",
            f"{ratios[k]:.2f}",
            f"{min(v):.0f}-{max(v):.0f}",
        ]
        for k, v in rates.items()
    ]
    return rows, ratios["rnnlab, defaults"], where


# ---------------------------------------------------------------- the headline, over seeds

HEADLINE = ("test/acc", "test/balanced_acc", "test/f1_macro")
SEEN = ("seen share", "acc seen", "acc unseen", "seen, other language")


@torch.no_grad()
def seen_and_unseen(ckpt_path: Path) -> dict[str, float]:
    """How the best checkpoint of a names run scores on the test lines whose name is also in its
    training split ("seen") and on the others, the split redrawn from the checkpoint's config.

    ``seen share``: the fraction of test lines that are seen. ``seen, other language``: how many
    seen test lines carry a language that is not the one their name carries most often in
    training (a model that follows its training lines answers them with that one instead).
    ``accuracy`` is the whole test split's, which must equal the run's own ``test/acc``.
    """
    from collections import Counter

    from rnnlab.evaluate import restore

    _, dm, task = restore(ckpt_path)
    dm.setup()
    train_y = dm.splits["train"].tensors["y"].tolist()
    languages: dict[str, Counter] = {}
    for name, c in zip(dm.texts["train"], train_y, strict=True):
        languages.setdefault(name, Counter())[c] += 1
    test = dm.splits["test"].tensors
    predicted = torch.cat(
        [
            task(test["x"][i : i + 512], test["lengths"][i : i + 512]).argmax(-1)
            for i in range(0, len(test["y"]), 512)
        ]
    )
    right = (predicted == test["y"]).tolist()
    seen = [name in languages for name in dm.texts["test"]]
    other = 0
    for name, c in zip(dm.texts["test"], test["y"].tolist(), strict=True):
        counts = languages.get(name)
        if counts and counts[c] < max(counts.values()):
            other += 1
    n_seen = sum(seen)
    n_unseen = len(seen) - n_seen
    return {
        "accuracy": sum(right) / len(right),
        "seen share": n_seen / len(seen),
        "acc seen": sum(r for r, s in zip(right, seen, strict=True) if s) / max(n_seen, 1),
        "acc unseen": sum(r for r, s in zip(right, seen, strict=True) if not s) / max(n_unseen, 1),
        "seen, other language": float(other),
    }


def seed_runs(seeds: list[int], overrides: list[str], data_dir: Path) -> list[dict]:
    """``python train.py experiment=names seed=<s> ...`` once per seed: wall seconds and metrics."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            out = Path(tmp) / f"seed{seed}"
            seconds, metrics = process_run(data_dir, out, [f"seed={seed}", *overrides])
            rows.append({"seed": seed, "seconds": seconds, **{k: metrics[k] for k in HEADLINE}})
            best = out / "checkpoints" / "best.ckpt"
            if best.is_file():  # absent with callbacks=none: no breakdown then
                breakdown = seen_and_unseen(best)
                accuracy = breakdown.pop("accuracy")
                if abs(accuracy - metrics["test/acc"]) > 1e-6:
                    raise RuntimeError(
                        f"seed {seed}: best.ckpt scores {accuracy:.4f} on the redrawn test split, "
                        f"not the run's test/acc {metrics['test/acc']:.4f}"
                    )
                rows[-1].update(breakdown)
            cells = [_cell(k, rows[-1].get(k)) for k in ("seconds", *HEADLINE, *SEEN)]
            print(_row(str(seed), cells), flush=True)
    return rows


def _cell(key: str, value: float | None) -> str:
    """A table cell: seconds and counts to one decimal, rates to four, ``-`` for none."""
    if value is None:
        return "-"
    return f"{value:{'.1f' if key in ('seconds', 'seen, other language') else '.4f'}}"


def _row(first: str, cells: list[str]) -> str:
    return "| " + " | ".join([first, *cells]) + " |"


def main(argv: list[str] | None = None) -> int:
    """Print the names headline: ``experiment=names`` over seeds, each run from start to exit."""
    import argparse
    import statistics
    import subprocess
    import sys

    parser = argparse.ArgumentParser(
        description="experiment=names over several seeds: test accuracy, balanced accuracy and "
        "macro F1 on each seed's held-out 15%, mean and spread, and each run's wall seconds"
    )
    parser.add_argument(
        "--seeds", default="1,2,3", type=lambda s: [int(v) for v in s.split(",")], help="1,2,3"
    )
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides (data.balance=...)")
    args = parser.parse_args(argv)
    data_dir = shared_names_dir()
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    print(
        f"{' '.join(['python train.py experiment=names', *args.overrides])} on {data_dir}, "
        f"seeds {' '.join(map(str, args.seeds))}, OMP_NUM_THREADS={threads}"
    )
    print()
    print("| seed | seconds | " + " | ".join((*HEADLINE, *SEEN)) + " |")
    print("|" + "---|" * (2 + len(HEADLINE) + len(SEEN)))
    try:
        rows = seed_runs(args.seeds, args.overrides, data_dir)
    except subprocess.CalledProcessError as e:
        print(
            f"error: {' '.join(e.cmd)} exited {e.returncode}:\n{e.stderr.decode()[-3000:]}",
            file=sys.stderr,
        )
        return 1
    keys = ("seconds", *HEADLINE, *(k for k in SEEN if all(k in r for r in rows)))
    columns = {k: [r[k] for r in rows] for k in keys}
    spread = statistics.stdev if len(rows) > 1 else (lambda v: 0.0)
    blank = ["-"] * (1 + len(HEADLINE) + len(SEEN) - len(keys))
    mean = [f"{_cell(k, statistics.fmean(c))} ± {_cell(k, spread(c))}" for k, c in columns.items()]
    print(_row("mean ± std", mean + blank))
    span = [f"{_cell(k, min(c))}-{_cell(k, max(c))}" for k, c in columns.items()]
    print(_row("min-max", span + blank))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
