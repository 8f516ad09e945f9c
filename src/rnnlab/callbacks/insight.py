"""Seeing inside recurrent nets: gradient flow through time, hidden-state pictures, histograms.

Each callback works on a fixed batch of validation sequences, outside the training graph: it
replays the net step by step (``rnnlab.nets.replay``), in eval mode, and never touches the
parameters' ``.grad``, so training is the same with or without it. Pictures go to TensorBoard
(images, histograms, text); scalars go through ``pl_module.log`` and so reach ``metrics.json``.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from rnnlab.config_checks import integer, require
from rnnlab.errors import RnnlabError
from rnnlab.nets import CharRNN, RecurrentNet, replay
from rnnlab.review import tensorboard_writer

RATIO_FLOOR = 1e-38  # log10 of a ratio that underflowed to zero is reported as -38
RATIO_CEIL = 1e38  # and of one whose last-step gradient is zero (an infinite ratio) as +38
MAX_TICK_LABELS = 40  # label every time step with its input up to this many steps


def _interval(name: str, value: int | None) -> int | None:
    return require(name, value, integer(1, null=True))


def fixed_batch(trainer: L.Trainer, num_sequences: int, device: torch.device) -> dict:
    """``num_sequences`` validation sequences, the same at every call (padding trimmed).

    Where sequences differ in length (names), they are spread evenly over the whole validation
    split sorted by length, shortest to longest, so long ones are seen too; otherwise they are the
    first ones of the first validation batch.
    """
    datamodule = trainer.datamodule
    split = (getattr(datamodule, "splits", None) or {}).get("val")
    tensors = getattr(split, "tensors", {})
    if "lengths" in tensors and hasattr(split, "__getitems__"):
        order = torch.argsort(tensors["lengths"], stable=True)
        count = min(num_sequences, len(order))
        picks = order[torch.linspace(0, len(order) - 1, count).round().long()]
        return {k: v.to(device) for k, v in split.__getitems__(picks.tolist()).items()}
    loader = datamodule.val_dataloader() if datamodule is not None else trainer.val_dataloaders
    if isinstance(loader, (list, tuple)):
        loader = loader[0]
    batch = next(iter(loader))
    batch = {k: v[:num_sequences].to(device) for k, v in batch.items()}
    if "lengths" in batch:
        longest = int(batch["lengths"].max())
        for key in ("x", "y"):
            if batch[key].dim() >= 2 and batch[key].shape[1] > longest:
                batch[key] = batch[key][:, :longest]
    return batch


class _EvalMode:
    """Puts a module in eval mode for a block and restores its mode after."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc) -> None:
        self.module.train(self.was_training)


def gradient_flow(
    net: torch.nn.Module, loss_fn, batch: dict[str, torch.Tensor]
) -> list[torch.Tensor]:
    """Per layer, the (seq,) norms ``||dL/dh_t||`` over the whole batch, for t = 1..T.

    ``L = loss_fn(net(x, lengths), batch)``; ``h_t`` is layer's (batch, hidden) state at step t and
    the gradient is the total one, through every later step. No parameter's ``.grad`` changes.
    """
    with torch.enable_grad():
        trace = replay.trace(net, batch["x"], batch.get("lengths"))
        loss = loss_fn(trace.output, batch)
        states = [h for layer in trace.hidden for h in layer]
        grads = torch.autograd.grad(loss, states, allow_unused=True)
    norms, start = [], 0
    for layer in trace.hidden:
        chunk = grads[start : start + len(layer)]
        norms.append(
            torch.stack(
                [
                    g.detach().norm() if g is not None else h.new_zeros(())
                    for g, h in zip(chunk, layer, strict=True)
                ]
            )
        )
        start += len(layer)
    return norms


def flow_ratio(norms: torch.Tensor) -> float:
    """``||dL/dh_1|| / ||dL/dh_T||``: near 0 the gradient vanishes on its way back, above 1 it grows."""
    last = float(norms[-1])
    return float(norms[0]) / last if last > 0 else math.inf


def log10_ratio(ratio: float) -> float:
    """log10 of a ratio, kept within [-38, 38] so that a chart can draw every point."""
    return math.log10(min(max(ratio, RATIO_FLOOR), RATIO_CEIL))


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=80)


def _integer_ticks(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def grad_flow_figure(norms: list[torch.Tensor], title: str):
    """A line plot of ``||dL/dh_t||`` against t, one line per layer, on a log scale."""
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    for layer, values in enumerate(norms, start=1):
        steps = range(1, len(values) + 1)
        ax.plot(
            steps, values.clamp(min=RATIO_FLOOR).cpu().numpy(), marker=".", label=f"layer {layer}"
        )
    ax.set_yscale("log")
    _integer_ticks(ax.xaxis)
    ax.set_xlabel("time step t", fontsize=9)
    ax.set_ylabel("||dL/dh_t||", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.16, right=0.97, top=0.9, bottom=0.15)
    return fig


def log_profile_histogram(writer, tag: str, values: torch.Tensor, step: int) -> None:
    """A TensorBoard histogram whose bucket t holds ``values[t-1]``: a profile over time steps."""
    values = values.double().cpu()
    steps = torch.arange(1, len(values) + 1, dtype=torch.float64)
    total = float(values.sum())
    writer.add_histogram_raw(
        tag,
        min=1.0,
        max=float(len(values)),
        num=total,
        sum=float((steps * values).sum()),
        sum_squares=float((steps**2 * values).sum()),
        bucket_limits=(steps + 0.5).tolist(),
        bucket_counts=values.tolist(),
        global_step=step,
    )


class _FixedBatchCallback(L.Callback):
    """Runs ``self.observe`` every ``every_n_epochs`` epochs (or ``every_n_steps`` steps)."""

    def __init__(
        self,
        every_n_epochs: int | None = 1,
        every_n_steps: int | None = None,
        num_sequences: int = 32,
    ) -> None:
        name = type(self).__name__
        self.every_n_epochs = _interval(f"{name}.every_n_epochs", every_n_epochs)
        self.every_n_steps = _interval(f"{name}.every_n_steps", every_n_steps)
        self.num_sequences = _interval(f"{name}.num_sequences", num_sequences)
        self.batch: dict | None = None
        self.calls = 0  # how many times observe ran

    def setup(self, trainer, pl_module, stage: str) -> None:
        net = pl_module.net
        if getattr(net, "num_directions", 1) != 1:
            raise RnnlabError(
                f"{type(self).__name__} replays the net step by step and needs "
                "model.bidirectional=false"
            )
        if not isinstance(net, (RecurrentNet, CharRNN)) and not hasattr(net, "trace"):
            raise RnnlabError(f"{type(self).__name__} cannot replay a {type(net).__name__}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._observe(trainer, pl_module, on_step=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_steps is None and self.every_n_epochs:
            epoch = trainer.current_epoch + 1
            last = trainer.should_stop or epoch == trainer.max_epochs
            if epoch % self.every_n_epochs == 0 or last:
                self._observe(trainer, pl_module, on_step=False)

    def _observe(self, trainer, pl_module, on_step: bool) -> None:
        self.calls += 1
        # the random state is left as found, so training draws the same numbers with or without
        with torch.random.fork_rng(devices=[]), _EvalMode(pl_module):
            if self.batch is None:
                self.batch = fixed_batch(trainer, self.num_sequences, pl_module.device)
            self.observe(trainer, pl_module, self.batch, on_step)

    def observe(self, trainer, pl_module, batch: dict, on_step: bool) -> None:
        raise NotImplementedError


class GradientFlow(_FixedBatchCallback):
    """``||dL/dh_t||`` for t = 1..T per layer: a line plot, a histogram, and ``grad_flow/ratio``.

    ``grad_flow/ratio`` is ``||dL/dh_1|| / ||dL/dh_T||`` in the first layer: how much of the
    gradient at the last step survives the trip back to the first (near 0: vanishing).
    ``grad_flow/log10_ratio`` is its log10; deeper layers add ``grad_flow/ratio_layer<k>``.
    """

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not callable(getattr(pl_module, "loss", None)):
            raise RnnlabError(
                f"GradientFlow needs a task with a loss(output, batch) method; "
                f"{type(pl_module).__name__} has none"
            )

    def observe(self, trainer, pl_module, batch: dict, on_step: bool) -> None:
        norms = gradient_flow(pl_module.net, pl_module.loss, batch)
        ratio = flow_ratio(norms[0])
        # the charts get log10 of each ratio (a ratio spans 1e-30 to 1e3: on a linear axis most
        # of its values sit flat at zero or off the drawn range); metrics.json gets both
        charted = {"grad_flow/log10_ratio": log10_ratio(ratio)}
        recorded = {"grad_flow/ratio": ratio}
        for layer, layer_norms in enumerate(norms[1:], start=2):
            layer_ratio = flow_ratio(layer_norms)
            charted[f"grad_flow/log10_ratio_layer{layer}"] = log10_ratio(layer_ratio)
            recorded[f"grad_flow/ratio_layer{layer}"] = layer_ratio
        for values, to_logger in ((charted, True), (recorded, False)):
            for key, value in values.items():
                pl_module.log(key, value, on_step=on_step, on_epoch=not on_step, logger=to_logger)
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        step = trainer.global_step
        lengths = batch.get("lengths")
        if lengths is not None and int(lengths.min()) != int(lengths.max()):
            span = f"{len(lengths)} sequences of {int(lengths.min())} to {int(lengths.max())} steps"
        else:
            span = f"{len(batch['x'])} sequences, T = {len(norms[0])}"
        title = f"step {step}: ||dL/dh_1|| / ||dL/dh_T|| = {ratio:.3g} ({span})"
        writer.add_figure("grad_flow/norms", grad_flow_figure(norms, title), step)
        for layer, layer_norms in enumerate(norms, start=1):
            log_profile_histogram(writer, f"grad_flow/layer{layer}", layer_norms, step)


def _time_axis(ax, labels: list[str] | None, steps: int) -> bool:
    """Time ticks on whole steps: the input read at each step where it fits (True), else step
    numbers from 1 (False)."""
    if labels is not None and steps <= MAX_TICK_LABELS:
        ax.set_xticks(range(steps), labels, fontsize=9 if steps <= 20 else 7)
        return True
    from matplotlib.ticker import FuncFormatter

    _integer_ticks(ax.xaxis)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(round(x)) + 1}"))
    return False


def hidden_figure(sequence: dict[str, torch.Tensor], title: str, labels: list[str] | None = None):
    """Heat maps (units x time) of one sequence's hidden state and, if recorded, gates and cell.

    ``labels``: what the input reads at each step (characters of a name), shown under each column.
    """
    fig = _figure(7, 1.6 + 1.4 * len(sequence))
    axes = fig.subplots(len(sequence), 1, squeeze=False)[:, 0]
    for ax, (name, values) in zip(axes, sequence.items(), strict=True):
        values = values.T.cpu().numpy()  # (units, time)
        if name in ("i", "f", "o", "r", "z"):
            image = ax.imshow(
                values, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest"
            )
        else:
            bound = max(float(abs(values).max()), 1e-6)
            image = ax.imshow(
                values,
                aspect="auto",
                cmap="RdBu_r",
                vmin=-bound,
                vmax=bound,
                interpolation="nearest",
            )
        ax.set_ylabel(GATE_NAMES.get(name, name), fontsize=8)
        _integer_ticks(ax.yaxis)
        ax.tick_params(axis="y", labelsize=7)
        steps = values.shape[1]
        if ax is axes[-1]:
            labelled = _time_axis(ax, labels, steps)
        else:  # the same columns as the last map: ticks without repeating the labels
            _time_axis(ax, None if labels is None else [""] * steps, steps)
        fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    axes[0].set_title(title, fontsize=9)
    axes[-1].set_xlabel("input read at each step" if labelled else "time step")
    height = fig.get_figheight()  # inches: room for a two-line title and the time axis
    fig.subplots_adjust(
        left=0.12, right=0.92, top=1 - 0.5 / height, bottom=0.55 / height, hspace=0.35
    )
    return fig


GATE_NAMES = {
    "h": "h (hidden)",
    "c": "c (cell)",
    "i": "i (input)",
    "f": "f (forget)",
    "g": "g (candidate)",
    "o": "o (output)",
    "r": "r (reset)",
    "z": "z (update)",
    "n": "n (candidate)",
}


def token_labels(x: torch.Tensor, datamodule) -> list[str]:
    """How each step's input reads: characters for token ids with a vocabulary, else symbols."""
    vocab = getattr(datamodule, "vocab", None) or getattr(datamodule, "vocabulary", None)
    if x.dim() == 1:  # token ids
        if vocab is not None and hasattr(vocab, "decode"):
            return [vocab.decode([int(i)]) or "·" for i in x]
        return [str(int(i)) for i in x]
    if bool(((x == 0) | (x == 1)).all()) and bool((x.sum(-1) <= 1).all()):  # one-hot symbols
        return [str(int(row.argmax()) + 1) if row.sum() > 0 else "·" for row in x]
    return [f"{float(row[0]):.2g}" for row in x]


def class_of(index: int, class_names) -> str:
    return str(class_names[index]) if class_names else f"class {index}"


def reads_as_text(x: torch.Tensor, datamodule) -> bool:
    """Whether a sequence is token ids of a vocabulary (characters)."""
    vocab = getattr(datamodule, "vocab", None) or getattr(datamodule, "vocabulary", None)
    return x.dim() == 1 and hasattr(vocab, "decode")


def describe_sequence(labels: list[str], text: bool) -> str:
    """The input in a few words: a name in quotes, else its first symbols and its length."""
    if text:
        joined = "".join(labels)
        if len(joined) <= 40:
            return f'"{joined}"'
        return f'"{joined[:37]}..." ({len(joined)} steps)'
    shown = " ".join(labels[:8]) + (" ..." if len(labels) > 8 else "")
    return f"[{shown}] ({len(labels)} steps)"


def prediction_changes(step_outputs: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """For one sequence's (seq, classes) outputs: the final class, ``p_t`` of it, and ``p_t - p_{t-1}``.

    ``p_t`` is the predicted class's probability after reading steps 1..t; before the first step
    the reference is the uniform ``1 / classes``.
    """
    probs = torch.softmax(step_outputs.float(), dim=-1)  # log-probabilities give the same
    predicted = int(probs[-1].argmax())
    p = probs[:, predicted]
    before = torch.cat([p.new_full((1,), 1.0 / probs.shape[-1]), p[:-1]])
    return predicted, p, p - before


def prediction_figure(labels: list[str], p: torch.Tensor, change: torch.Tensor, title: str):
    """Bars: how much each input step moved the predicted class's probability."""
    fig = _figure(max(4.0, 0.35 * min(len(labels), MAX_TICK_LABELS) + 1.5), 3)
    ax = fig.add_subplot()
    steps = range(len(labels))
    colors = ["tab:green" if c >= 0 else "tab:red" for c in change.tolist()]
    ax.bar(steps, change.cpu().numpy(), color=colors)
    ax.plot(steps, p.cpu().numpy(), color="black", marker=".", label="p(predicted class)")
    ax.axhline(0.0, color="grey", linewidth=0.5)
    _time_axis(ax, labels, len(labels))
    ax.set_ylabel("change in p")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.12)
    return fig


class HiddenStates(_FixedBatchCallback):
    """Heat maps of hidden states (and LSTM/GRU gates, LSTM cell) for a few fixed sequences.

    For sequence-to-one classification it also shows which inputs moved the prediction: the
    change in the predicted class's probability as each step (each character of a name) is read.
    """

    def __init__(self, num_sequences: int = 3, max_units: int = 64, **kwargs) -> None:
        super().__init__(num_sequences=num_sequences, **kwargs)
        self.max_units = _interval("HiddenStates.max_units", max_units)

    def observe(self, trainer, pl_module, batch: dict, on_step: bool) -> None:
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        with torch.no_grad():
            trace = replay.trace(pl_module.net, batch["x"], batch.get("lengths"))
        step = trainer.global_step
        lengths = batch.get("lengths")
        datamodule = trainer.datamodule
        dims = getattr(datamodule, "dims", None)
        class_names = getattr(dims, "class_names", None)
        classifies = trace.output.dim() == 2 and getattr(dims, "task", None) == "classification"
        for k in range(len(batch["x"])):
            length = int(lengths[k]) if lengths is not None else batch["x"].shape[1]
            labels = token_labels(batch["x"][k, :length].cpu(), datamodule)
            said = describe_sequence(labels, reads_as_text(batch["x"][k], datamodule))
            if classifies:
                predicted, p, change = prediction_changes(trace.step_outputs[k, :length])
                said += f" → {class_of(predicted, class_names)} (p = {float(p[-1]):.2f}"
                truth = batch["y"][k] if batch["y"].dim() == 1 else None
                if truth is not None:
                    said += f", true {class_of(int(truth), class_names)}"
                said += ")"
            elif trace.output.dim() == 2 and trace.output.shape[-1] == 1 and "y" in batch:
                target = batch["y"][k].reshape(-1)
                if len(target) == 1:
                    said += f": output {float(trace.output[k, 0]):.3g}, target {float(target):.3g}"
            for layer in range(len(trace.hidden)):
                pictures = {"h": trace.hidden_sequence(layer)[k, :length, : self.max_units]}
                for name, values in trace.gates[layer].items():
                    pictures[name] = values[k, :length, : self.max_units]
                title = f"{said}\nlayer {layer + 1}, step {step}"
                fig = hidden_figure(pictures, title, labels)
                writer.add_figure(f"hidden/seq{k}/layer{layer + 1}", fig, step)
            if classifies:
                title = said
                fig = prediction_figure(labels, p, change, title)
                writer.add_figure(f"hidden/seq{k}/prediction", fig, step)
                rows = "\n".join(
                    f"| {label} | {float(pt):.3f} | {float(c):+.3f} |"
                    for label, pt, c in zip(labels, p, change, strict=True)
                )
                text = f"{title}\n\n| input | p | change |\n|---|---|---|\n{rows}"
                writer.add_text(f"hidden/seq{k}/prediction", text, step)


class ParameterHistograms(L.Callback):
    """Histograms of every parameter and its gradient, every ``every_n_steps`` optimizer steps.

    Gradients are read just before the optimizer step (after any AMP unscaling, before clipping).
    """

    def __init__(self, every_n_steps: int = 100) -> None:
        self.every_n_steps = _interval("ParameterHistograms.every_n_steps", every_n_steps)
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        writer = tensorboard_writer(trainer)
        if writer is None:
            return
        self.calls += 1
        step = trainer.global_step
        for name, param in pl_module.named_parameters():
            writer.add_histogram(f"weights/{name}", param.detach().cpu(), step)
            if param.grad is not None:
                writer.add_histogram(f"gradients/{name}", param.grad.detach().cpu(), step)
