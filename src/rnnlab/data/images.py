"""Images read as sequences: sequential and permuted MNIST-family, and scikit-learn's 8x8 digits.

An image of ``H x W`` pixels becomes ``H * W`` steps of one value (``mode: pixels``, sMNIST) or
``H`` steps of ``W`` values (``mode: rows``). ``permute: true`` shuffles the pixels with one fixed
permutation drawn from ``permute_seed`` (null: the run's seed) before the sequence is cut, the same
for every split (pMNIST). Inputs are normalised with the training split's mean and standard
deviation.

The permutation and the normalisation are part of the datamodule's state, so they travel inside
every checkpoint and eval/predict feed a restored model exactly what it trained on.

``MnistDataModule`` reads the four IDX files that MNIST, Fashion-MNIST and KMNIST share
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each raw or ``.gz``) and carves its validation split from training;
``DigitsDataModule`` splits scikit-learn's 1,797 bundled digits (no download) three ways.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import torch

from rnnlab.data.base import Dims, RnnlabDataModule, TensorBatches
from rnnlab.errors import RnnlabError

MODES = ("pixels", "rows")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DIGIT_NAMES = tuple(str(d) for d in range(10))


# ---------------------------------------------------------------------------------- IDX files


def find_idx(folder: str | Path, name: str) -> Path:
    """``folder/name``, or ``folder/name.gz`` where only the compressed file is there."""
    folder = Path(folder)
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise RnnlabError(
        f"{folder / name}[.gz] is missing: point data.data_dir at a folder with the four IDX "
        "files of MNIST, Fashion-MNIST or KMNIST (scripts/fetch_mnist.py downloads MNIST)"
    )


def read_idx(path: str | Path, ndim: int) -> torch.Tensor:
    """The unsigned-byte array of an IDX file (raw or gzip) with ``ndim`` dimensions."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise RnnlabError(f"{path} cannot be read ({reason})") from e
    header = 4 + 4 * ndim
    expected = bytes([0, 0, 0x08, ndim])
    if len(raw) < header or raw[:4] != expected:
        found = raw[:4].hex() if len(raw) >= 4 else "none"
        raise RnnlabError(
            f"{path} is not an IDX file of unsigned bytes in {ndim} dimensions "
            f"(magic number 0x{found}, expected 0x{expected.hex()})"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = math.prod(shape)
    if len(raw) - header != size:
        raise RnnlabError(
            f"{path} holds {len(raw) - header} bytes of data but its header announces "
            f"{' x '.join(map(str, shape))} ({size} bytes)"
        )
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)


def read_idx_pair(
    folder: str | Path, split: str, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(n, H, W)`` and labels ``(n,)`` of the ``train`` or ``test`` files of ``folder``."""
    image_name, label_name = IDX_FILES[split]
    image_path, label_path = find_idx(folder, image_name), find_idx(folder, label_name)
    images, labels = read_idx(image_path, 3), read_idx(label_path, 1)
    if len(images) != len(labels):
        raise RnnlabError(
            f"{label_path} holds {len(labels)} labels but {image_path} holds {len(images)} images"
        )
    if len(images) == 0:
        raise RnnlabError(f"{image_path} holds no images")
    if int(labels.max()) >= num_classes:
        raise RnnlabError(
            f"{label_path} holds label {int(labels.max())} but the data has {num_classes} classes"
        )
    return images, labels.long()


# ---------------------------------------------------------------------------------- sequences


def draw_permutation(n_pixels: int, seed: int) -> torch.Tensor:
    """One fixed order of ``n_pixels`` pixels, from ``seed`` alone."""
    return torch.randperm(n_pixels, generator=torch.Generator().manual_seed(int(seed)))


def _val_size(value, n: int) -> int:
    """A count of training images, or a fraction of them."""
    if isinstance(value, float):
        return round(n * value)
    return int(value)


class SequentialImages(RnnlabDataModule):
    """Base: images ``(n, H, W)`` and labels per split, served as pixel or row sequences."""

    def __init__(
        self,
        mode: str = "pixels",
        permute: bool = False,
        permute_seed: int | None = None,
        class_names: list[str] | tuple[str, ...] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if mode not in MODES:
            raise ValueError(f"data.mode must be one of {list(MODES)}, got {mode!r}")
        if not isinstance(permute, bool):
            raise ValueError(f"data.permute must be true or false, got {permute!r}")
        if permute_seed is not None and (
            isinstance(permute_seed, bool) or not isinstance(permute_seed, int) or permute_seed < 0
        ):
            raise ValueError(
                f"data.permute_seed must be a non-negative integer or null, got {permute_seed!r}"
            )
        self.mode = mode
        self.permute = permute
        self.permute_seed = permute_seed
        self.class_names = tuple(str(c) for c in class_names) if class_names else DIGIT_NAMES
        # what training decided, restored from a checkpoint by load_state_dict
        self.permutation: torch.Tensor | None = None
        self.mean: float | None = None
        self.std: float | None = None
        self.image_shape: tuple[int, int] | None = None

    def images(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{split: (images (n, H, W), labels (n,))}`` for train, val and test."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        data = self.images()
        height, width = data["train"][0].shape[1:]
        n_pixels = height * width
        if self.permutation is None and self.permute:
            seed = self.seed if self.permute_seed is None else self.permute_seed
            self.permutation = draw_permutation(n_pixels, seed)
        if self.permutation is not None and len(self.permutation) != n_pixels:
            raise RnnlabError(
                f"the checkpoint's pixel permutation covers {len(self.permutation)} pixels but "
                f"these images have {height} x {width} = {n_pixels}"
            )
        if self.mean is None or self.std is None:
            train = data["train"][0].float()
            self.mean, self.std = float(train.mean()), float(train.std()) or 1.0
        self.image_shape = (int(height), int(width))
        for split, (images, labels) in data.items():
            self.splits[split] = TensorBatches(x=self.sequences(images), y=labels)

    def sequences(self, images: torch.Tensor) -> torch.Tensor:
        """``(n, H, W)`` images as normalised ``(n, steps, features)`` sequences."""
        n, height, width = images.shape
        x = (images.reshape(n, height * width).float() - self.mean) / self.std
        if self.permutation is not None:
            x = x[:, self.permutation]
        if self.mode == "rows":
            return x.reshape(n, height, width).contiguous()
        return x.reshape(n, height * width, 1).contiguous()

    @property
    def dims(self) -> Dims:
        if not self.splits:
            self.setup()
        return Dims(
            task="classification",
            target="last",
            output_size=len(self.class_names),
            input_size=self.splits["train"].tensors["x"].shape[2],
            class_names=self.class_names,
        )

    @property
    def baselines(self) -> dict[str, float]:
        """Always guessing the most common training class: its share of each split."""
        if "train" not in self.splits:
            return {}
        majority = int(torch.bincount(self.splits["train"].tensors["y"]).argmax())
        return {
            f"{split}/acc": float((self.splits[split].tensors["y"] == majority).float().mean())
            for split in ("val", "test")
            if split in self.splits
        }

    # ------------------------------------------------------------------ checkpoint state

    def state_dict(self) -> dict:
        if not self.splits:
            self.setup()
        return {
            "permutation": self.permutation.clone() if self.permutation is not None else None,
            "mean": self.mean,
            "std": self.std,
            "image_shape": list(self.image_shape),
        }

    def load_state_dict(self, state: dict) -> None:
        permutation = state.get("permutation")
        if permutation is not None:
            permutation = torch.as_tensor(permutation, dtype=torch.long)
        same = (
            (permutation is None) == (self.permutation is None)
            and (permutation is None or torch.equal(permutation, self.permutation))
            and (state.get("mean"), state.get("std")) == (self.mean, self.std)
        )
        if not same:
            self.splits.clear()  # rebuilt with what the model trained on
        self.permutation = permutation
        self.mean, self.std = state.get("mean"), state.get("std")


class MnistDataModule(SequentialImages):
    """MNIST, Fashion-MNIST or KMNIST from their four IDX files (see the module doc).

    ``val_size``: training images held out for validation, a count or a fraction (seeded).
    """

    def __init__(self, data_dir: str, val_size: int | float = 5000, **kwargs) -> None:
        super().__init__(**kwargs)
        valid = (
            isinstance(val_size, int) and not isinstance(val_size, bool) and val_size >= 1
        ) or (isinstance(val_size, float) and 0 < val_size < 1)
        if not valid:
            raise ValueError(
                f"data.val_size must be a positive count or a fraction in (0, 1), got {val_size!r}"
            )
        self.data_dir = str(data_dir)
        self.val_size = val_size

    def images(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        folder = Path(self.data_dir).expanduser()
        if not folder.is_dir():
            raise RnnlabError(
                f"MNIST folder {folder} does not exist: point data.data_dir at the IDX files "
                "(scripts/fetch_mnist.py downloads MNIST into data/mnist)"
            )
        n_classes = len(self.class_names)
        train_x, train_y = read_idx_pair(folder, "train", n_classes)
        test_x, test_y = read_idx_pair(folder, "test", n_classes)
        if train_x.shape[1:] != test_x.shape[1:]:
            raise RnnlabError(
                f"the test images of {folder} are {tuple(test_x.shape[1:])} pixels but the "
                f"training images {tuple(train_x.shape[1:])}"
            )
        n_val = _val_size(self.val_size, len(train_x))
        if not 1 <= n_val < len(train_x):
            raise RnnlabError(
                f"data.val_size={self.val_size} leaves no training images out of the "
                f"{len(train_x)} of {folder}"
            )
        g = torch.Generator().manual_seed(int(self.seed))
        order = torch.randperm(len(train_x), generator=g)
        val, train = order[:n_val], order[n_val:]
        return {
            "train": (train_x[train], train_y[train]),
            "val": (train_x[val], train_y[val]),
            "test": (test_x, test_y),
        }


def load_digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits (values 0..16) and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise RnnlabError(
            "data=digits needs scikit-learn, which the dev extra installs: pip install -e '.[dev]'"
        ) from e
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)
    return images, torch.as_tensor(digits.target, dtype=torch.long)


class DigitsDataModule(SequentialImages):
    """scikit-learn's 8x8 digits (64 pixel steps or 8 rows), split three ways by ``seed``."""

    def __init__(self, val_fraction: float = 0.1, test_fraction: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"data.{key} must be in (0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1:
            raise ValueError(
                f"data.val_fraction + data.test_fraction must leave digits to train on, got "
                f"{val_fraction} + {test_fraction}"
            )
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)

    def images(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        images, labels = load_digits_images()
        n = len(images)
        n_val, n_test = round(n * self.val_fraction), round(n * self.test_fraction)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.seed)))
        parts = {
            "train": order[n_val + n_test :],
            "val": order[:n_val],
            "test": order[n_val : n_val + n_test],
        }
        return {split: (images[i], labels[i]) for split, i in parts.items()}
