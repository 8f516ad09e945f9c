"""Images as sequences: IDX files (MNIST family), scikit-learn's digits, the fixed permutation."""

from __future__ import annotations

import gzip
import struct
import time
from pathlib import Path

import pytest
import torch
from conftest import QUIET, make_cfg, run_cli
from omegaconf import open_dict

from rnnlab.config_checks import check_values
from rnnlab.data import DigitsDataModule, MnistDataModule
from rnnlab.data.images import draw_permutation, read_idx
from rnnlab.errors import RnnlabError
from rnnlab.evaluate import evaluate
from rnnlab.predict import load
from rnnlab.train import train

FASHION = Path("/usr/share/datasets/fashion-mnist")
NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: torch.Tensor) -> bytes:
    """An IDX file of unsigned bytes: magic number, big-endian sizes, then the data."""
    header = bytes([0, 0, 0x08, array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    return header + array.to(torch.uint8).numpy().tobytes()


def toy_images(
    n: int, seed: int, height: int = 4, width: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by the brightness of the top-left pixels, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 100, (n, height, width), generator=g)
    images[:, 0, :2] += 150 * labels[:, None]
    return images.to(torch.uint8), labels


def write_idx_folder(
    folder: Path, n_train: int = 40, n_test: int = 10, gz: bool = False, **size
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"train": toy_images(n_train, 1, **size), "test": toy_images(n_test, 2, **size)}
    for split, (images, labels) in data.items():
        for name, array in zip(NAMES[split], (images, labels), strict=True):
            payload = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)
    return data


def restore_pixels(module, x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation and the permutation of sequences ``x``: the original pixels."""
    flat = x.reshape(len(x), -1) * module.std + module.mean
    if module.permutation is not None:
        out = torch.empty_like(flat)
        out[:, module.permutation] = flat
        flat = out
    return flat.round()


# ---------------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_files_become_pixel_and_row_sequences(tmp_path, gz):
    data = write_idx_folder(tmp_path, gz=gz)
    pixels = MnistDataModule(str(tmp_path), mode="pixels", val_size=8)
    pixels.setup()
    sizes = {s: tuple(pixels.splits[s].tensors["x"].shape) for s in ("train", "val", "test")}
    assert sizes == {"train": (32, 12, 1), "val": (8, 12, 1), "test": (10, 12, 1)}
    dims = pixels.dims
    assert (dims.input_size, dims.output_size, dims.task, dims.target) == (
        1,
        10,
        "classification",
        "last",
    )

    rows = MnistDataModule(str(tmp_path), mode="rows", val_size=8)
    rows.setup()
    assert tuple(rows.splits["train"].tensors["x"].shape) == (32, 4, 3)  # 4 steps of 3 pixels
    assert rows.dims.input_size == 3
    quarter = MnistDataModule(str(tmp_path), mode="rows", val_size=0.25)  # a fraction of 40
    quarter.setup()
    assert [len(quarter.splits[s]) for s in ("train", "val", "test")] == [30, 10, 10]
    # rows are the pixel sequence cut every 3 values: the same numbers in the same order
    assert torch.equal(
        rows.splits["test"].tensors["x"].reshape(10, 12),
        pixels.splits["test"].tensors["x"].reshape(10, 12),
    )

    # normalised with the training split's statistics
    train_x = pixels.splits["train"].tensors["x"]
    assert abs(float(train_x.mean())) < 1e-5 and abs(float(train_x.std()) - 1) < 1e-5
    # the test split is the t10k files, in file order, pixels and labels intact
    images, labels = data["test"]
    assert torch.equal(
        restore_pixels(pixels, pixels.splits["test"].tensors["x"]), images.reshape(10, 12).float()
    )
    assert torch.equal(pixels.splits["test"].tensors["y"], labels)
    # train + val are the training files, split by the seed without overlap
    seen = torch.cat(
        [restore_pixels(pixels, pixels.splits[s].tensors["x"]) for s in ("train", "val")]
    )
    original = data["train"][0].reshape(40, 12).float()
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, original.tolist()))


def test_the_validation_split_is_drawn_from_the_seed(tmp_path):
    write_idx_folder(tmp_path)

    def val(seed):
        module = MnistDataModule(str(tmp_path), val_size=8, seed=seed)
        module.setup()
        return module.splits["val"].tensors["x"]

    assert torch.equal(val(1), val(1))
    assert not torch.equal(val(1), val(2))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", r"t10k-labels-idx1-ubyte\[\.gz\] is missing"),
        (
            "magic",
            r"train-images-idx3-ubyte is not an IDX file of unsigned bytes in 3 dimensions \(magic number 0x00000903, expected 0x00000803\)",
        ),
        (
            "truncated",
            r"train-images-idx3-ubyte holds 479 bytes of data but its header announces 40 x 4 x 3 \(480 bytes\)",
        ),
        (
            "count",
            r"t10k-labels-idx1-ubyte holds 9 labels but .*t10k-images-idx3-ubyte holds 10 images",
        ),
        ("label", r"train-labels-idx1-ubyte holds label 12 but the data has 10 classes"),
        ("gzip", r"t10k-images-idx3-ubyte\.gz cannot be read"),
    ],
)
def test_a_malformed_file_is_named_in_one_sentence(tmp_path, damage, message):
    write_idx_folder(tmp_path)
    if damage == "missing":
        (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    elif damage == "magic":
        path = tmp_path / "train-images-idx3-ubyte"
        path.write_bytes(b"\x00\x00\x09\x03" + path.read_bytes()[4:])
    elif damage == "truncated":
        path = tmp_path / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-1])
    elif damage == "count":
        (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(torch.zeros(9)))
    elif damage == "label":
        (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(torch.full((40,), 12)))
    elif damage == "gzip":
        (tmp_path / "t10k-images-idx3-ubyte").unlink()
        (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(RnnlabError, match=message) as error:
        MnistDataModule(str(tmp_path)).setup()
    assert "\n" not in str(error.value)


def test_a_bad_folder_stops_the_cli_with_one_sentence_and_exit_2(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_cli(["data=mnist", f"data.data_dir={missing}", f"paths.log_dir={tmp_path}"])
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error == [
        f"error: MNIST folder {missing} does not exist: point data.data_dir at the IDX files "
        "(scripts/fetch_mnist.py downloads MNIST into data/mnist)"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.mode=columns",
            "invalid data config: data.mode must be pixels or rows, got 'columns'",
        ),
        ("data.permute=1", "invalid data config: data.permute must be true or false, got 1"),
        (
            "data.val_size=0",
            "data.val_size must be a positive count of training images or a fraction in (0, 1), got 0",
        ),
        (
            "data.val_size=1.5",
            "data.val_size must be a positive count of training images or a fraction in (0, 1), got 1.5",
        ),
        (
            "data.permute_seed=-1",
            "data.permute_seed must be a non-negative integer or null, got -1",
        ),
    ],
)
def test_impossible_image_options_are_refused_before_anything_is_built(tmp_path, override, message):
    cfg = make_cfg(["data=mnist", override], tmp_path)
    with pytest.raises(RnnlabError) as error:
        check_values(cfg)
    assert message in str(error.value)


def test_a_val_size_that_leaves_nothing_to_train_on_is_refused(tmp_path):
    write_idx_folder(tmp_path)
    with pytest.raises(
        RnnlabError, match=r"data.val_size=40 leaves no training images out of the 40"
    ):
        MnistDataModule(str(tmp_path), val_size=40).setup()


def test_read_idx_reads_any_dimensions(tmp_path):
    array = torch.arange(24).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    assert torch.equal(read_idx(tmp_path / "a", 3), array.to(torch.uint8))


# ---------------------------------------------------------------------------------- permutation


def test_the_permutation_is_fixed_by_the_seed_and_the_same_in_every_split(tmp_path):
    data = write_idx_folder(tmp_path)
    module = MnistDataModule(str(tmp_path), val_size=8, permute=True, seed=3)
    module.setup()
    perm = module.permutation
    assert sorted(perm.tolist()) == list(range(12)) and not torch.equal(perm, torch.arange(12))
    assert torch.equal(perm, draw_permutation(12, 3))
    assert not torch.equal(perm, draw_permutation(12, 4))
    # every split is the normalised image with its pixels in this one order
    plain = MnistDataModule(str(tmp_path), val_size=8, permute=False, seed=3)
    plain.setup()
    for split in ("train", "val", "test"):
        x, y = module.splits[split].tensors["x"], plain.splits[split].tensors["x"]
        assert torch.equal(x[:, :, 0], y[:, perm, 0]), split
        assert torch.equal(module.splits[split].tensors["y"], plain.splits[split].tensors["y"])
    assert torch.equal(
        restore_pixels(module, module.splits["test"].tensors["x"]),
        data["test"][0].reshape(10, 12).float(),
    )
    # permute_seed fixes it whatever the run's seed
    a = MnistDataModule(str(tmp_path), permute=True, permute_seed=7, seed=1, val_size=8)
    b = MnistDataModule(str(tmp_path), permute=True, permute_seed=7, seed=2, val_size=8)
    a.setup(), b.setup()
    assert torch.equal(a.permutation, b.permutation)
    assert torch.equal(a.permutation, draw_permutation(12, 7))


def test_rows_mode_cuts_the_permuted_pixels_into_rows(tmp_path):
    write_idx_folder(tmp_path)
    pixels = MnistDataModule(str(tmp_path), mode="pixels", permute=True, seed=5, val_size=8)
    rows = MnistDataModule(str(tmp_path), mode="rows", permute=True, seed=5, val_size=8)
    pixels.setup(), rows.setup()
    assert torch.equal(
        rows.splits["test"].tensors["x"].reshape(10, 12),
        pixels.splits["test"].tensors["x"][:, :, 0],
    )


@pytest.fixture(scope="module")
def permuted_run(tmp_path_factory):
    """A GRU trained on permuted toy IDX images (6 x 6, rows), its checkpoint and test metrics."""
    base = tmp_path_factory.mktemp("pmnist")
    write_idx_folder(base / "idx", n_train=200, n_test=60, height=6, width=6)
    cfg = make_cfg(
        [
            "data=mnist",
            f"data.data_dir={base / 'idx'}",
            "data.mode=rows",
            "data.permute=true",
            "data.val_size=40",
            "data.batch_size=32",
            "model=gru",
            "model.hidden_size=16",
            "trainer.max_epochs=4",
            "trainer.accelerator=cpu",
            "logger=none",
            *QUIET,
        ],
        base / "run",
    )
    metrics = train(cfg)
    return {
        "ckpt": base / "run" / "checkpoints" / "best.ckpt",
        "metrics": metrics,
        "dir": base / "idx",
    }


def test_the_permutation_travels_in_the_checkpoint_for_eval_and_predict(permuted_run):
    checkpoint = torch.load(permuted_run["ckpt"], weights_only=True)
    state = checkpoint["MnistDataModule"]
    trained = draw_permutation(36, 42)  # the run's seed (conf/train.yaml)
    assert torch.equal(state["permutation"], trained)
    assert state["image_shape"] == [6, 6]
    assert permuted_run["metrics"]["test/acc"] > 0.8  # learnable, so a wrong order would show

    # eval under another seed still feeds the training permutation and normalisation
    scored = evaluate(permuted_run["ckpt"], ["seed=7"], accelerator="cpu")
    assert scored["test/acc"] == pytest.approx(permuted_run["metrics"]["test/acc"], abs=1e-6)
    assert scored["test/loss"] == pytest.approx(permuted_run["metrics"]["test/loss"], abs=1e-5)

    # predict's loader restores the same datamodule state
    cfg, datamodule, task = load(permuted_run["ckpt"])
    assert torch.equal(datamodule.permutation, trained)
    assert (datamodule.mean, datamodule.std) == (state["mean"], state["std"])
    batch = next(iter(datamodule.predict_dataloader()))
    with torch.no_grad():
        predicted = task(batch["x"]).argmax(-1)
    accuracy = float((predicted == batch["y"]).float().mean())
    assert accuracy > 0.8

    # the control: the same images with the permutation another seed draws
    other = MnistDataModule(
        str(permuted_run["dir"]), mode="rows", permute=True, val_size=40, seed=7
    )
    other.setup()
    assert not torch.equal(other.permutation, trained)
    assert not torch.equal(
        other.splits["test"].tensors["x"], datamodule.splits["test"].tensors["x"]
    )


def test_a_restored_state_replaces_a_built_permutation(tmp_path):
    write_idx_folder(tmp_path)
    trained = MnistDataModule(str(tmp_path), permute=True, seed=1, val_size=8)
    trained.setup()
    fresh = MnistDataModule(str(tmp_path), permute=True, seed=2, val_size=8)
    fresh.setup()
    fresh.load_state_dict(trained.state_dict())
    fresh.setup()
    assert torch.equal(fresh.permutation, trained.permutation)
    assert torch.equal(fresh.splits["test"].tensors["x"], trained.splits["test"].tensors["x"])


# ---------------------------------------------------------------------------------- digits


def test_digits_are_64_pixel_steps_or_8_rows_split_by_the_seed():
    pixels = DigitsDataModule(mode="pixels", seed=0)
    pixels.setup()
    sizes = {s: tuple(pixels.splits[s].tensors["x"].shape) for s in ("train", "val", "test")}
    assert sizes == {"train": (1258, 64, 1), "val": (180, 64, 1), "test": (359, 64, 1)}
    rows = DigitsDataModule(mode="rows", seed=0)
    rows.setup()
    assert tuple(rows.splits["train"].tensors["x"].shape) == (1258, 8, 8)
    assert rows.dims.input_size == 8 and rows.dims.output_size == 10
    assert rows.dims.class_names == tuple("0123456789")
    train_x = pixels.splits["train"].tensors["x"]
    assert abs(float(train_x.mean())) < 1e-5 and abs(float(train_x.std()) - 1) < 1e-5
    # pixel values 0..16 come back from the normalised sequences
    restored = restore_pixels(pixels, pixels.splits["test"].tensors["x"])
    assert float(restored.min()) == 0 and float(restored.max()) == 16
    labels = torch.cat([pixels.splits[s].tensors["y"] for s in ("train", "val", "test")])
    assert torch.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    other = DigitsDataModule(seed=1)
    other.setup()
    assert not torch.equal(other.splits["test"].tensors["y"], pixels.splits["test"].tensors["y"])


def test_permuted_digits_share_one_order_across_splits():
    plain, permuted = DigitsDataModule(seed=4), DigitsDataModule(permute=True, seed=4)
    plain.setup(), permuted.setup()
    perm = permuted.permutation
    assert torch.equal(perm, draw_permutation(64, 4))
    for split in ("train", "val", "test"):
        assert torch.equal(
            permuted.splits[split].tensors["x"][:, :, 0],
            plain.splits[split].tensors["x"][:, perm, 0],
        )


def test_digits_without_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "sklearn.datasets", None)
    with pytest.raises(
        RnnlabError,
        match=r"data=digits needs scikit-learn, which the dev extra installs: pip install -e '\.\[dev\]'",
    ):
        DigitsDataModule().setup()


def test_a_gru_learns_digits_read_row_by_row(tmp_path):
    cfg = make_cfg(
        ["experiment=digits", "trainer.accelerator=cpu", "logger=none", *QUIET], tmp_path
    )
    with open_dict(cfg):
        cfg.trainer.max_epochs = 12
    start = time.time()
    metrics = train(cfg)
    assert metrics["test/acc"] >= 0.9, metrics
    assert time.time() - start < 120


# ---------------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.skipif(
    not FASHION.is_dir(),
    reason=f"Fashion-MNIST is not at {FASHION} (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_from_the_debian_package(tmp_path):
    cfg = make_cfg(["data=fashion_mnist", "data.mode=rows"], tmp_path)
    from hydra.utils import instantiate

    module = instantiate(cfg.data)
    module.setup()
    sizes = {s: tuple(module.splits[s].tensors["x"].shape) for s in ("train", "val", "test")}
    assert sizes == {"train": (55000, 28, 28), "val": (5000, 28, 28), "test": (10000, 28, 28)}
    assert torch.bincount(module.splits["test"].tensors["y"]).tolist() == [1000] * 10
    assert module.dims.class_names[0] == "T-shirt/top" and module.dims.output_size == 10
    # Fashion-MNIST's pixel mean is 72.94 over all 60,000 training images; 72.90 over these 55,000
    assert module.mean == pytest.approx(72.904, abs=0.005)


# ---------------------------------------------------------------------------------- download


def test_fetch_mnist_offline_fails_with_a_clear_message(tmp_path):
    result = run_cli(
        ["url=http://127.0.0.1:9/", f"dest={tmp_path}/mnist", "timeout=2"],
        script="scripts/fetch_mnist.py",
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: could not download http://127.0.0.1:9/train-images-idx3-ubyte.gz ([Errno 111] "
        "Connection refused); without network access, copy the four MNIST IDX files into a "
        "folder and point data.data_dir at it"
    ]
    assert not (tmp_path / "mnist").exists()


def test_fetch_mnist_writes_the_four_files_the_datamodule_reads(tmp_path, monkeypatch):
    import io
    import urllib.request

    from rnnlab.fetch import fetch_mnist

    source = tmp_path / "source"
    write_idx_folder(source, gz=True)
    asked = []

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def urlopen(url, timeout):
        asked.append(url)
        return Response((source / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    folder = fetch_mnist("https://example.invalid/mnist", tmp_path / "mnist")
    assert asked[0] == "https://example.invalid/mnist/train-images-idx3-ubyte.gz"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in source.iterdir())
    module = MnistDataModule(str(folder), val_size=8)
    module.setup()
    assert [len(module.splits[s]) for s in ("train", "val", "test")] == [32, 8, 10]

    # a page that is not gzip (an error page, a proxy's answer) is refused before anything is written
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(b"<html>"))
    with pytest.raises(RnnlabError, match=r"train-images-idx3-ubyte.gz did not return a gzip file"):
        fetch_mnist("https://example.invalid/mnist/", tmp_path / "other")
    assert not (tmp_path / "other").exists()
