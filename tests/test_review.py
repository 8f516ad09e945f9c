"""Reviewing runs in TensorBoard: run names, one HParams table, pictures that read at card size.

The end-to-end test serves a finished 2 x 2 grid on names with TensorBoard itself (its own
process on 127.0.0.1) and reads what the browser would, through TensorBoard's HTTP data API.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import QUIET, run_cli

from rnnlab.callbacks import insight
from rnnlab.callbacks.classification import CARD_WIDTH, confusion_image, per_class_table
from rnnlab.data import NamesDataModule
from rnnlab.data.names import write_toy_names
from rnnlab.review import (
    BEST_TAG,
    TEST_TAG,
    event_dir,
    hparams_summaries,
    name_event_folders,
    run_label,
)

LANGUAGES = [
    "Arabic", "Chinese", "Czech", "Dutch", "English", "French", "German", "Greek", "Irish",
    "Italian", "Japanese", "Korean", "Polish", "Portuguese", "Russian", "Scottish", "Spanish",
    "Vietnamese",
]  # fmt: skip
GRID = [
    "-m",
    "data=names",
    "model=rnn,gru",
    "seed=1,2",
    "insight=[grad_flow,hidden_states]",
    "data.batch_size=16",
    "model.hidden_size=8",
    "trainer.max_epochs=1",
    *QUIET,
]


# --- a finished grid, served by TensorBoard ------------------------------------------------


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("review")
    folder = write_toy_names(root / "toy", per_language=40)
    sweep = root / "sweep"
    out = run_cli([*GRID, f"data.data_dir={folder}", f"hydra.sweep.dir={sweep}"], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return sweep


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(grid):
    """TensorBoard on the grid, as `tensorboard --logdir <sweep>` serves it; stopped after."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(grid)]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                runs = json.loads(get(f"{url}/data/runs"))
                if len(runs) == 4 and post(f"{url}/data/plugin/hparams/experiment", {}).get(
                    "metricInfos"
                ):
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"TensorBoard did not serve the grid: {process.stderr.read()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def trial_names(grid: Path) -> dict[str, str]:
    """Each job's TensorBoard run name (``<job>/<swept overrides>``) -> its job directory."""
    names = {}
    for job in sorted(p for p in grid.iterdir() if p.name.isdigit()):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        swept = [o for o in overrides if o.split("=")[0] in ("model", "seed")]
        names[f"{job.name}/{','.join(swept)}"] = job
    return names


def test_tensorboard_names_each_trial_by_its_swept_overrides(grid, server):
    runs = json.loads(get(f"{server}/data/runs"))
    expected = trial_names(grid)
    assert sorted(runs) == sorted(expected)
    assert set(expected) == {
        "0/model=rnn,seed=1", "1/model=rnn,seed=2", "2/model=gru,seed=1", "3/model=gru,seed=2"
    }  # fmt: skip
    assert not any("tensorboard" in run for run in runs)


def test_the_hparams_table_shows_swept_keys_first_and_a_value_in_every_row(grid, server):
    experiment = post(f"{server}/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = [info["name"] for info in experiment["hparamInfos"]]
    # the browser shows the first five: the swept keys, then the essentials; no constants
    assert hparams[:5] == ["model", "seed", "data", "model.hidden_size", "model.num_layers"]
    assert [info["differs"] for info in experiment["hparamInfos"][:3]] == [True, True, False]
    assert "data.accents" not in hparams and "data.num_workers" not in hparams
    metrics = [info["name"]["tag"] for info in experiment["metricInfos"]]
    assert metrics[:5] == [BEST_TAG, TEST_TAG, "val/acc", "val/acc_best", "test/acc"]

    body = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 100,
    }
    groups = post(f"{server}/data/plugin/hparams/session_groups", body)["sessionGroups"]
    jobs = trial_names(grid)
    assert sorted(g["sessions"][0]["name"] for g in groups) == sorted(jobs)
    for group in groups:
        (session,) = group["sessions"]
        job, label = session["name"].split("/")
        # the Trial ID column starts with what the trial is, then where it lies
        assert group["name"] == f"{label.replace('model=', '').replace('seed=', '')} @ {grid / job}"
        record = json.loads((jobs[session["name"]] / "metrics.json").read_text())["metrics"]
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert values[BEST_TAG] == pytest.approx(record["val/acc_best"], abs=1e-6)
        assert values[TEST_TAG] == pytest.approx(record["test/acc"], abs=1e-6)
        model, seed = label.split(",")
        assert group["hparams"]["model"] == model.split("=")[1]
        assert group["hparams"]["seed"] == float(seed.split("=")[1])


def test_pictures_and_text_are_served_under_tags_that_read(grid, server):
    from PIL import Image

    run = "3/model=gru,seed=2"
    images = json.loads(get(f"{server}/data/plugin/images/tags"))[run]
    assert {
        "confusion_matrix/val",
        "grad_flow/norms",
        "hidden/seq0/layer1",
        "hidden/seq2/layer1",
        "hidden/seq0/prediction",
    } <= set(images)
    assert sorted(images)[0] == "confusion_matrix/val"  # the Images tab's first card
    query = urllib.parse.urlencode({"run": run, "tag": "confusion_matrix/val", "sample": 0})
    (meta,) = json.loads(get(f"{server}/data/plugin/images/images?{query}"))
    png = get(f"{server}/data/plugin/images/individualImage?{meta['query']}")
    assert Image.open(io.BytesIO(png)).width <= CARD_WIDTH  # shown at its own size

    texts = json.loads(get(f"{server}/data/plugin/text/tags"))[run]
    assert {
        "val/predictions/text_summary",
        "confusion_matrix/val/text_summary",  # per language: n, recall, most often taken for
        "hidden/seq0/prediction/text_summary",
    } <= set(texts)
    query = urllib.parse.urlencode({"run": run, "tag": "hidden/seq2/prediction/text_summary"})
    (text,) = json.loads(get(f"{server}/data/plugin/text/text?{query}"))
    # the title names the input, the prediction and the truth; the third of the fixed sequences
    # is the longest name of the validation split
    said = re.search(r'<p>"(\w+)" → (\w+) \(p = 0\.\d\d, true (\w+)\)</p>', text["text"])
    assert said is not None, text["text"][:300]
    assert {said[2], said[3]} <= {"Kalomir", "Tundish"}
    val = NamesDataModule(grid.parent / "toy", seed=2)
    val.setup()
    assert len(said[1]) == max(len(name) for name in val.texts["val"])

    scalars = json.loads(get(f"{server}/data/plugin/scalars/tags"))[run]
    assert {BEST_TAG, TEST_TAG, "grad_flow/log10_ratio"} <= set(scalars)
    assert "grad_flow/ratio" not in scalars  # its log10 is what a chart can draw


# --- names and pictures, without a server --------------------------------------------------


@pytest.fixture
def names(tmp_path) -> NamesDataModule:
    dm = NamesDataModule(write_toy_names(tmp_path / "toy", per_language=60), seed=0)
    dm.setup()
    return dm


def test_the_fixed_batch_spans_the_names_from_shortest_to_longest(names):
    trainer = SimpleNamespace(datamodule=names)
    batch = insight.fixed_batch(trainer, 3, torch.device("cpu"))
    lengths = batch["lengths"].tolist()
    every = names.splits["val"].tensors["lengths"]
    assert lengths[0] == int(every.min()) and lengths[-1] == int(every.max())
    assert lengths == sorted(lengths) and len(set(lengths)) == 3
    assert batch["x"].shape[1] == max(lengths)  # padding trimmed to the longest
    assert insight.fixed_batch(trainer, 3, torch.device("cpu"))["x"].equal(batch["x"])


def test_heat_maps_label_time_with_the_characters_and_units_with_integers():
    labels = list("Belimov")
    pictures = {"h": torch.randn(7, 5), "z": torch.rand(7, 5)}
    fig = insight.hidden_figure(pictures, '"Belimov" → Russian', labels)
    last = next(ax for ax in fig.axes if ax.get_ylabel().startswith("z"))  # the lowest map
    assert [t.get_text() for t in last.get_xticklabels()] == labels
    assert list(last.get_xticks()) == list(range(7))
    assert all(float(t).is_integer() for t in last.get_yticks())
    assert fig.axes[0].get_title() == '"Belimov" → Russian'
    assert last.get_xlabel() == "input read at each step"
    long = insight.hidden_figure({"h": torch.randn(60, 5)}, "adding", [f"{i}" for i in range(60)])
    assert long.axes[0].get_xlabel() == "time step"  # 60 labels do not fit: step numbers
    shown = [t for t in long.axes[0].get_xticks() if 0 <= t < 60]
    assert all(float(t).is_integer() for t in shown) and 5 <= len(shown) <= 12

    flow = insight.grad_flow_figure([torch.rand(4) + 0.1], "T = 4")
    assert all(float(t).is_integer() for t in flow.axes[0].get_xticks())


def test_a_sequence_is_described_by_what_it_reads():
    assert insight.describe_sequence(list("Hua"), text=True) == '"Hua"'
    assert insight.describe_sequence(["1", "2"], text=False) == "[1 2] (2 steps)"


def test_the_confusion_picture_of_18_languages_fits_a_tensorboard_card():
    g = torch.Generator().manual_seed(0)
    matrix = torch.randint(0, 5, (18, 18), generator=g) + torch.diag(
        torch.randint(20, 900, (18,), generator=g)
    )
    picture = confusion_image(matrix, LANGUAGES)
    assert picture.shape[1] <= CARD_WIDTH
    table = per_class_table(torch.tensor([[8, 2, 0], [1, 9, 0], [0, 0, 0]]), ["A", "B", "C"])
    assert table.splitlines()[2:] == ["| A | 10 | 0.80 | B (2) |", "| B | 10 | 0.90 | A (1) |"]


def test_names_report_the_majority_class_baseline(names, cfg_factory, tmp_path, caplog):
    y = names.splits["test"].tensors["y"]
    majority = int(torch.bincount(names.splits["train"].tensors["y"]).argmax())
    share = float((y == majority).float().mean())
    baselines = names.baselines
    assert baselines["test/acc"] == pytest.approx(share)
    assert baselines["test/balanced_acc"] == pytest.approx(0.5)  # two languages
    assert baselines["test/f1_macro"] == pytest.approx(share / (1 + share))

    from rnnlab.train import report

    with caplog.at_level("INFO", logger="rnnlab"):
        report(tmp_path, {"test/acc": 0.9, "val/acc_best": 0.9}, baselines)
    assert f"test/acc               0.9000   (baseline {share:.4f})" in caplog.text
    assert "val/acc_best           0.9000\n" in caplog.text + "\n"


# --- names of runs and the HParams columns --------------------------------------------------


def test_a_run_is_named_by_its_model_and_data_or_its_experiment(cfg_factory):
    assert run_label(cfg_factory()) == "lstm-on-adding"
    assert run_label(cfg_factory("model=gru", "data=parity")) == "gru-on-parity"
    assert run_label(cfg_factory("model=char_rnn", "data=copy")) == "charrnn-on-copy"


def test_a_resumed_run_keeps_its_event_folder(tmp_path, cfg_factory):
    from lightning.pytorch.loggers import TensorBoardLogger

    old = tmp_path / "tensorboard"
    old.mkdir()
    (old / "events.out.tfevents.1.host").write_bytes(b"")
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="", version=None)
    name_event_folders([logger], cfg_factory())
    assert Path(logger.log_dir) == old and event_dir(tmp_path) == old
    fresh = TensorBoardLogger(save_dir=str(tmp_path / "new"), name="", version=None)
    name_event_folders([fresh], cfg_factory())
    assert Path(fresh.log_dir) == tmp_path / "new" / "lstm-on-adding"


def test_every_task_registers_the_same_first_metric_columns():
    from tensorboard.plugins.hparams import plugin_data_pb2

    def columns(metrics):
        exp, _, _ = hparams_summaries({"seed": 1, "model": "gru"}, metrics, [])
        content = exp.value[0].metadata.plugin_data.content
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
        return [m.name.tag for m in experiment.metric_infos]

    regression = columns(["val/mse", "val/mse_best", "test/mse"])
    classification = columns(["val/acc", "val/acc_best", "test/acc"])
    assert regression[:2] == classification[:2] == [BEST_TAG, TEST_TAG]
    assert regression[2:] == ["val/mse", "val/mse_best", "test/mse"]
