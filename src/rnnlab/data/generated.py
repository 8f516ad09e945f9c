"""Generated sequence tasks, made as whole tensors once, deterministic from ``seed``."""

from __future__ import annotations

import math

import torch

from rnnlab.config_checks import integer, require
from rnnlab.data.base import Dims, RnnlabDataModule, TensorBatches


def _positive_int(name: str, value) -> int:
    return require(f"data.{name}", value, integer(1))


class GeneratedDataModule(RnnlabDataModule):
    """Base for generated tasks: ``n_train``/``n_val``/``n_test`` samples drawn from one seeded generator."""

    def __init__(
        self,
        n_train: int = 4096,
        n_val: int = 512,
        n_test: int = 1024,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.n_train = _positive_int("n_train", n_train)
        self.n_val = _positive_int("n_val", n_val)
        self.n_test = _positive_int("n_test", n_test)

    def generate(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        """Return ``x``, ``y`` (and ``lengths`` for variable-length tasks) for ``n`` samples."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        g = torch.Generator().manual_seed(int(self.seed))
        for split, n in (("train", self.n_train), ("val", self.n_val), ("test", self.n_test)):
            self.splits[split] = TensorBatches(**self.generate(n, g))


class TokenTask(GeneratedDataModule):
    """A task over discrete symbols, fed as one-hot vectors (``one_hot=true``) or token ids.

    Symbols are ids ``1..num_symbols``; id 0 is padding (a zero vector when one-hot encoded).
    """

    def __init__(self, num_symbols: int, one_hot: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_symbols = _positive_int("num_symbols", num_symbols)
        self.one_hot = bool(one_hot)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.one_hot:
            return tokens
        # (n, seq) ids -> (n, seq, num_symbols) with padding id 0 as the zero vector
        return torch.nn.functional.one_hot(tokens, self.num_symbols + 1)[..., 1:].float()

    def input_dims(self) -> dict:
        if self.one_hot:
            return {"input_size": self.num_symbols}
        return {"vocab_size": self.num_symbols + 1}

    def draw_lengths(
        self, n: int, seq_len: int, min_len: int | None, g: torch.Generator
    ) -> torch.Tensor:
        if min_len is None:
            return torch.full((n,), seq_len, dtype=torch.long)
        return torch.randint(min_len, seq_len + 1, (n,), generator=g)

    @staticmethod
    def mask_padding(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(tokens.shape[1])
        return tokens.masked_fill(steps[None, :] >= lengths[:, None], 0)


class PatternDataModule(TokenTask):
    """One-hot sequence classification: a rule over the symbols decides the label.

    Rules: ``motif`` (1 if the symbols of ``motif`` appear consecutively, planted in about half
    the sequences), ``first_last`` (1 if the first and last valid symbols are equal) and
    ``majority`` (the most frequent symbol, ties to the smallest; one class per symbol).
    """

    RULES = ("motif", "first_last", "majority")

    def __init__(
        self,
        seq_len: int = 12,
        num_symbols: int = 4,
        rule: str = "motif",
        motif: tuple[int, ...] | list[int] = (3, 2, 1),
        min_len: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(num_symbols=num_symbols, **kwargs)
        self.seq_len = _positive_int("seq_len", seq_len)
        if rule not in self.RULES:
            raise ValueError(f"data.rule must be one of {list(self.RULES)}, got {rule!r}")
        self.rule = rule
        self.motif = [int(m) for m in motif]
        if rule == "motif":
            if not self.motif or any(not 1 <= m <= num_symbols for m in self.motif):
                raise ValueError(
                    f"data.motif must be symbols in 1..{num_symbols}, got {list(motif)}"
                )
            if len(self.motif) > (min_len or seq_len):
                raise ValueError(
                    f"data.motif (length {len(self.motif)}) is longer than the shortest sequence"
                )
        if min_len is not None and not 1 <= min_len <= seq_len:
            raise ValueError(f"data.min_len must be in 1..data.seq_len={seq_len}, got {min_len!r}")
        self.min_len = min_len

    @property
    def dims(self) -> Dims:
        classes = self.num_symbols if self.rule == "majority" else 2
        return Dims(task="classification", target="last", output_size=classes, **self.input_dims())

    def generate(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        lengths = self.draw_lengths(n, self.seq_len, self.min_len, g)
        tokens = torch.randint(1, self.num_symbols + 1, (n, self.seq_len), generator=g)
        plant = torch.rand(n, generator=g) < 0.5
        if self.rule == "motif":
            k = len(self.motif)
            start = (torch.rand(n, generator=g) * (lengths - k + 1)).long()
            pos = start[:, None] + torch.arange(k)[None, :]
            motif = torch.tensor(self.motif).expand(n, k)
            tokens[plant] = tokens[plant].scatter(1, pos[plant], motif[plant])
            tokens = self.mask_padding(tokens, lengths)
            windows = tokens.unfold(1, k, 1)  # (n, seq-k+1, k)
            y = (windows == torch.tensor(self.motif)).all(-1).any(-1).long()
        elif self.rule == "first_last":
            last = lengths - 1
            tokens[plant, last[plant]] = tokens[plant, 0]
            tokens = self.mask_padding(tokens, lengths)
            y = (tokens[:, 0] == tokens.gather(1, last[:, None]).squeeze(1)).long()
        else:
            tokens = self.mask_padding(tokens, lengths)
            counts = torch.nn.functional.one_hot(tokens, self.num_symbols + 1)[..., 1:].sum(1)
            y = counts.argmax(1)  # first maximum: ties go to the smallest symbol
        out = {"x": self.encode(tokens), "y": y}
        if self.min_len is not None:
            out["lengths"] = lengths
        return out


class ParityDataModule(TokenTask):
    """Parity of a bit sequence: the label is 1 when the number of ones is odd."""

    def __init__(self, seq_len: int = 10, min_len: int | None = None, **kwargs) -> None:
        super().__init__(num_symbols=2, **kwargs)
        self.seq_len = _positive_int("seq_len", seq_len)
        if min_len is not None and not 1 <= min_len <= seq_len:
            raise ValueError(f"data.min_len must be in 1..data.seq_len={seq_len}, got {min_len!r}")
        self.min_len = min_len

    @property
    def dims(self) -> Dims:
        return Dims(task="classification", target="last", output_size=2, **self.input_dims())

    @property
    def baselines(self) -> dict[str, float]:
        return {"acc": 0.5}

    def generate(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        lengths = self.draw_lengths(n, self.seq_len, self.min_len, g)
        bits = torch.randint(0, 2, (n, self.seq_len), generator=g)
        bits = bits * (torch.arange(self.seq_len)[None, :] < lengths[:, None])
        tokens = self.mask_padding(bits + 1, lengths)  # symbol 1 = bit 0, symbol 2 = bit 1
        out = {"x": self.encode(tokens), "y": bits.sum(1) % 2}
        if self.min_len is not None:
            out["lengths"] = lengths
        return out


class CopyDataModule(TokenTask):
    """The copy-memory task: remember ``copy_len`` symbols over ``T`` blank steps, then replay them.

    Input ids: 0 blank, 1..``num_symbols`` symbols, ``num_symbols + 1`` the delimiter. Targets are
    blank everywhere but the last ``copy_len`` steps. Sequence length ``T + 2 * copy_len``; the
    memoryless baseline scores cross-entropy ``copy_len * ln(num_symbols) / (T + 2 * copy_len)``.
    """

    def __init__(self, T: int = 20, copy_len: int = 10, num_symbols: int = 8, **kwargs) -> None:
        super().__init__(num_symbols=num_symbols + 1, **kwargs)  # + the delimiter
        self.T = _positive_int("T", T)
        self.copy_len = _positive_int("copy_len", copy_len)
        self.symbols = num_symbols

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.one_hot:
            return tokens
        return torch.nn.functional.one_hot(
            tokens, self.num_symbols + 1
        ).float()  # blank is a symbol

    def input_dims(self) -> dict:
        key = "input_size" if self.one_hot else "vocab_size"
        return {key: self.num_symbols + 1}

    @property
    def dims(self) -> Dims:
        return Dims(
            task="classification",
            target="sequence",
            output_size=self.symbols + 1,
            **self.input_dims(),
        )

    @property
    def baselines(self) -> dict[str, float]:
        """The memoryless strategy's cross-entropy: blanks, then a uniform guess over the symbols."""
        return {"loss": self.copy_len * math.log(self.symbols) / (self.T + 2 * self.copy_len)}

    def generate(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        k, total = self.copy_len, self.T + 2 * self.copy_len
        symbols = torch.randint(1, self.symbols + 1, (n, k), generator=g)
        x = torch.zeros(n, total, dtype=torch.long)
        x[:, :k] = symbols
        x[:, k + self.T - 1] = self.symbols + 1  # delimiter: start replaying after it
        y = torch.zeros(n, total, dtype=torch.long)
        y[:, -k:] = symbols
        return {"x": self.encode(x), "y": y}


class AddingDataModule(GeneratedDataModule):
    """The adding problem: sum the two values marked in a sequence of ``T`` (value, marker) pairs.

    One marker falls in each half. Always predicting 1 scores MSE 1/6 = 0.167.
    """

    def __init__(self, T: int = 50, **kwargs) -> None:
        super().__init__(**kwargs)
        self.T = _positive_int("T", T)
        if T < 2:
            raise ValueError(f"data.T must be at least 2 for the adding problem, got {T}")

    @property
    def dims(self) -> Dims:
        return Dims(task="regression", target="last", output_size=1, input_size=2)

    @property
    def baselines(self) -> dict[str, float]:
        """Always predicting 1: the variance of a sum of two uniforms, 1/6."""
        return {"mse": 1 / 6}

    def generate(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        half = self.T // 2
        values = torch.rand(n, self.T, generator=g)
        first = torch.randint(0, half, (n,), generator=g)
        second = torch.randint(half, self.T, (n,), generator=g)
        markers = torch.zeros(n, self.T)
        markers[torch.arange(n), first] = 1.0
        markers[torch.arange(n), second] = 1.0
        y = (values * markers).sum(1, keepdim=True)  # (n, 1)
        return {"x": torch.stack([values, markers], dim=-1), "y": y}


class CountingDataModule(GeneratedDataModule):
    """Next-value regression over arithmetic sequences (``[1,2,3] -> [2,3,4]``).

    ``x_t = (a + d t) * scale`` with ``a`` uniform in ``start_range`` and ``d`` in ``step_range``;
    the target at every step is the next value.
    """

    def __init__(
        self,
        seq_len: int = 10,
        start_range: tuple[float, float] | list[float] = (0.0, 10.0),
        step_range: tuple[float, float] | list[float] = (-2.0, 2.0),
        scale: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.seq_len = _positive_int("seq_len", seq_len)
        for name, r in (("start_range", start_range), ("step_range", step_range)):
            if len(r) != 2 or r[0] > r[1]:
                raise ValueError(f"data.{name} must be [low, high] with low <= high, got {list(r)}")
        self.start_range, self.step_range, self.scale = tuple(start_range), tuple(step_range), scale

    @property
    def dims(self) -> Dims:
        return Dims(task="regression", target="sequence", output_size=1, input_size=1)

    def generate(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        lo, hi = self.start_range
        a = lo + (hi - lo) * torch.rand(n, 1, generator=g)
        lo, hi = self.step_range
        d = lo + (hi - lo) * torch.rand(n, 1, generator=g)
        t = torch.arange(self.seq_len + 1, dtype=torch.float32)[None, :]
        values = (a + d * t) * self.scale  # (n, seq + 1)
        return {"x": values[:, :-1, None], "y": values[:, 1:, None]}


class SineDataModule(GeneratedDataModule):
    """Forecast the next value of noisy sine waves of random frequency, phase and amplitude."""

    def __init__(
        self,
        seq_len: int = 50,
        noise: float = 0.05,
        freq_range: tuple[float, float] | list[float] = (0.02, 0.1),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.seq_len = _positive_int("seq_len", seq_len)
        if noise < 0:
            raise ValueError(f"data.noise must be non-negative, got {noise!r}")
        if len(freq_range) != 2 or not 0 < freq_range[0] <= freq_range[1]:
            raise ValueError(
                f"data.freq_range must be [low, high] with 0 < low <= high, got {list(freq_range)}"
            )
        self.noise, self.freq_range = noise, tuple(freq_range)

    @property
    def dims(self) -> Dims:
        return Dims(task="regression", target="sequence", output_size=1, input_size=1)

    def generate(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        lo, hi = self.freq_range
        freq = lo + (hi - lo) * torch.rand(n, 1, generator=g)  # cycles per step
        phase = 2 * math.pi * torch.rand(n, 1, generator=g)
        amplitude = 0.5 + torch.rand(n, 1, generator=g)
        t = torch.arange(self.seq_len + 1, dtype=torch.float32)[None, :]
        clean = amplitude * torch.sin(2 * math.pi * freq * t + phase)
        noisy = clean + self.noise * torch.randn(clean.shape, generator=g)
        return {"x": noisy[:, :-1, None], "y": clean[:, 1:, None]}
