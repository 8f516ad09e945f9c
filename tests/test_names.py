"""Names by language: the reading policy, the split, the vocabulary, batching, learning, errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import QUIET, run_cli

from rnnlab.data import NamesDataModule
from rnnlab.data.names import LengthBuckets, read_names_folder, split_counts, write_toy_names
from rnnlab.data.vocab import PAD_ID, UNK_ID
from rnnlab.errors import RnnlabError
from rnnlab.review import event_dir
from rnnlab.train import train

# a small GRU that tells the two made-up languages apart in a few seconds
TOY = [
    "experiment=names",
    "model.hidden_size=32",
    "model.embedding_dim=16",
    "data.batch_size=16",
    "trainer.max_epochs=6",
    "trainer.accelerator=cpu",
    *QUIET,
]


def write(folder, files: dict[str, str | bytes]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def test_reading_skips_blanks_merges_duplicates_and_keeps_or_folds_accents(tmp_path):
    folder = write(
        tmp_path / "n",
        {
            "French.txt": "Béringer\n\n  Coté \nCote\nBéringer\n\n",
            "German.txt": "Müller\nAbel\n",
            "English.txt": "Abel\nSmith\n",
        },
    )
    kept = read_names_folder(folder, "keep")
    assert kept == {
        "English": ["Abel", "Smith"],
        "French": ["Béringer", "Coté", "Cote"],
        "German": ["Müller", "Abel"],
    }
    folded = read_names_folder(folder, "fold")
    assert folded["French"] == ["Beringer", "Cote"]  # folding can merge two spellings
    assert folded["German"] == ["Muller", "Abel"]


def test_a_name_under_several_languages_is_kept_once_per_language_or_dropped(tmp_path):
    folder = write(
        tmp_path / "n",
        {"English.txt": "Abel\nSmith\nJones\n", "German.txt": "Abel\nMüller\nSchulz\n"},
    )
    keep = NamesDataModule(folder, ambiguous="keep", val_fraction=0.34, test_fraction=0.33)
    pairs = keep._records()
    assert sorted(pairs) == [
        ("Abel", 0),
        ("Abel", 1),
        ("Jones", 0),
        ("Müller", 1),
        ("Schulz", 1),
        ("Smith", 0),
    ]
    drop = NamesDataModule(folder, ambiguous="drop", val_fraction=0.34, test_fraction=0.33)
    assert "Abel" not in {name for name, _ in drop._records()}
    # every copy of a name lands in one split
    for seed in range(5):
        keep = NamesDataModule(folder, seed=seed, val_fraction=0.34, test_fraction=0.33)
        splits = keep._split(keep._records())
        homes = [s for s, records in splits.items() if any(n == "Abel" for n, _ in records)]
        assert len(homes) == 1 and sum(n == "Abel" for n, _ in splits[homes[0]]) == 2


def test_split_is_stratified_seeded_and_disjoint(tmp_path):
    folder = write_toy_names(tmp_path / "toy", per_language=100)
    a, b, c = (NamesDataModule(folder, seed=s) for s in (1, 1, 2))
    for dm in (a, b, c):
        dm.setup()
    assert a.texts == b.texts
    assert a.texts["train"] != c.texts["train"]
    assert {k: len(v) for k, v in a.texts.items()} == {"train": 160, "val": 20, "test": 20}
    for split in ("train", "val", "test"):  # each language split 80/10/10
        counts = torch.bincount(a.splits[split].tensors["y"], minlength=2).tolist()
        assert counts == {"train": [80, 80], "val": [10, 10], "test": [10, 10]}[split]
    names = [set(a.texts[s]) for s in ("train", "val", "test")]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert split_counts(3, 0.1, 0.1) == (3, 0, 0)
    assert split_counts(2, 0.5, 0.5) == (1, 1, 0)


def test_vocabulary_comes_from_the_training_split_with_padding_and_unknown(tmp_path):
    folder = write_toy_names(tmp_path / "toy", per_language=100)
    dm = NamesDataModule(folder, seed=0)
    dm.setup()
    train_chars = sorted(set("".join(dm.texts["train"])))
    assert dm.vocab.symbols == train_chars
    assert dm.dims.vocab_size == len(train_chars) + 2
    assert dm.dims.class_names == ("Kalomir", "Tundish")
    t = dm.splits["train"].tensors
    row = 5
    n = int(t["lengths"][row])
    assert dm.decode(t["x"][row, :n]) == dm.texts["train"][row]
    assert torch.all(t["x"][row, n:] == PAD_ID)
    batch = dm.encode(["Kaski", "Qx"])  # Q and x never occur in the toy names
    assert batch["x"][1].tolist() == [UNK_ID, UNK_ID, PAD_ID, PAD_ID, PAD_ID]
    assert batch["lengths"].tolist() == [5, 2]


def test_class_weights_come_from_the_training_counts(tmp_path):
    folder = write(
        tmp_path / "n",
        {
            "Big.txt": "\n".join(f"Big{i}" for i in range(60)),
            "Small.txt": "\n".join(f"Sm{i}" for i in range(20)),
        },
    )
    dm = NamesDataModule(folder, balance="weights")
    dims = dm.dims
    # 48 + 16 training names: weight = total / (classes * count)
    assert dims.class_weights == pytest.approx((64 / (2 * 48), 64 / (2 * 16)), abs=1e-6)
    assert NamesDataModule(folder).dims.class_weights is None


def test_balanced_sampler_draws_each_language_equally_and_buckets_cut_padding(tmp_path):
    folder = write(
        tmp_path / "n",
        {
            "Big.txt": "\n".join(f"B{'a' * (i % 15)}{i}" for i in range(400)),
            "Small.txt": "\n".join(f"S{'o' * (i % 15)}{i}" for i in range(40)),
        },
    )
    dm = NamesDataModule(folder, balance="sampler", batch_size=32, seed=0)
    dm.setup()
    ys = torch.cat([b["y"] for _ in range(5) for b in dm.train_dataloader()])
    share = ys.float().mean().item()
    assert 0.4 < share < 0.6  # about half Small, though it is 9% of the names

    lengths = dm.splits["train"].tensors["lengths"]

    def padded_steps(bucket: bool) -> int:
        sampler = LengthBuckets(lengths, 32, seed=0, bucket=bucket)
        return sum(int(lengths[b].max()) * len(b) for b in sampler)

    assert padded_steps(True) < 0.8 * padded_steps(False)
    every = sorted(i for b in LengthBuckets(lengths, 32, seed=0) for i in b)
    assert every == list(range(len(lengths)))  # one epoch visits every name once


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"English.txt": "\n\n  \n", "German.txt": "Abel\n"}, "English.txt holds no names"),
        ({"Greek.txt": b"Abel\n\xff\xfeX\n"}, "Greek.txt is not UTF-8 text (bad byte at offset 5)"),
        ({"notes.md": "hello"}, "holds no <Language>.txt files"),
    ],
)
def test_bad_folders_are_one_clear_error_naming_the_file(tmp_path, files, needle):
    folder = write(tmp_path / "n", files)
    with pytest.raises(RnnlabError) as info:
        NamesDataModule(folder).setup()
    assert needle in str(info.value)


def test_missing_folder_stops_the_cli_before_training(tmp_path):
    result = run_cli(
        ["data=names", f"data.data_dir={tmp_path}/nowhere", f"hydra.run.dir={tmp_path}/run"],
        timeout=120,
    )
    assert result.returncode != 0
    assert f"names folder {tmp_path}/nowhere does not exist" in result.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_gru_tells_two_made_up_languages_apart(cfg_factory, tmp_path):
    folder = write_toy_names(tmp_path / "toy", per_language=150)
    metrics = train(cfg_factory(*TOY, f"data.data_dir={folder}"))
    assert metrics["test/acc"] >= 0.95
    assert metrics["test/f1_macro"] >= 0.95 and metrics["test/balanced_acc"] >= 0.95

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(
        str(event_dir(tmp_path / "run")), size_guidance={"images": 0, "tensors": 0}
    ).Reload()
    assert len(events.Images("confusion_matrix/val")) == 6  # one per validation
    text = events.Tensors("val/predictions/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("| name | language | predicted | probability |")
    assert len(text.splitlines()) == 2 + 8


def test_the_tutorial_cell_runs_batched_on_names(cfg_factory, tmp_path):
    folder = write_toy_names(tmp_path / "toy", per_language=40)
    cfg = cfg_factory("experiment=names_char_rnn", f"data.data_dir={folder}", "debug=fast", *QUIET)
    assert cfg.model._target_ == "rnnlab.nets.CharRNN" and cfg.model.hidden_size == 128
    metrics = train(cfg)
    assert math.isfinite(metrics["test/loss"])


def test_the_tutorial_recipe_learns_the_toy_languages(tmp_path):
    from bench.names import line_to_tensor, to_ascii, tutorial_recipe

    assert to_ascii("Émile-Ñoño") == "EmileNono"  # the tutorial's letters: no '-'
    assert line_to_tensor("Ab").shape == (2, 1, 57)
    folder = write_toy_names(tmp_path / "toy", per_language=60)
    dm = NamesDataModule(folder, seed=0)
    dm.setup()
    records = {
        s: list(zip(dm.texts[s], dm.splits[s].tensors["y"].tolist(), strict=True))
        for s in ("train", "test")
    }
    result = tutorial_recipe(records["train"], records["test"], 2, steps=900, eval_every=300)
    assert len(result["curve"]) == 3 and result["steps"] == 900
    assert result["acc"] >= 0.9


def test_real_names_set_reads_as_documented(shared_data):
    languages = read_names_folder(shared_data / "names")
    assert len(languages) == 18
    assert max(languages, key=lambda k: len(languages[k])) == "Russian"
    assert len(languages["Arabic"]) == 108  # 2000 lines, 108 distinct names


@pytest.mark.slow
def test_best_recipe_reaches_85_percent_on_the_real_test_split(cfg_factory, shared_data):
    metrics = train(cfg_factory("experiment=names", f"data.data_dir={shared_data / 'names'}"))
    assert metrics["test/acc"] >= 0.85


def test_the_confusion_picture_shades_each_cell_by_its_share_of_the_true_class():
    from rnnlab.callbacks.classification import _shade, confusion_image

    matrix = torch.tensor([[4, 0, 0], [1, 1, 0], [0, 0, 0]])  # the third class never seen
    picture = confusion_image(matrix, ["Aa", "Bb", "Cc"])
    assert picture.dtype.name == "uint8"
    assert picture.ndim == 3 and picture.shape[2] == 3
    colors = {tuple(int(v) for v in p) for p in picture.reshape(-1, 3)}
    assert {_shade(1.0), _shade(0.5), _shade(0.0)} <= colors  # recall 1, 0.5 and 0 cells
    assert _shade(1.0) == (8, 48, 107) and _shade(0.0) == (247, 251, 255)
    wider = confusion_image(torch.eye(6, dtype=torch.long), [f"L{i}" for i in range(6)])
    assert wider.shape[1] > picture.shape[1] and wider.shape[0] > picture.shape[0]
