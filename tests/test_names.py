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


def test_the_split_and_label_smoothing_are_checked_before_anything_is_built(tmp_path):
    from conftest import make_cfg

    from rnnlab.config_checks import check_values

    with pytest.raises(RnnlabError, match="data.split must be lines or names, got 'random'"):
        check_values(make_cfg(["data=names", "data.split=random"], tmp_path))
    with pytest.raises(RnnlabError, match=r"task.label_smoothing must be in \[0, 1\), got 1.5"):
        check_values(make_cfg(["experiment=names", "task.label_smoothing=1.5"], tmp_path))
    cfg = make_cfg(["experiment=names"], tmp_path)
    assert (cfg.data.split, cfg.data.duplicates, cfg.data.ambiguous) == ("lines", "keep", "keep")
    assert (cfg.data.test_fraction, cfg.data.val_fraction) == (0.15, 0.05)
    with pytest.raises(ValueError, match="data.split must be one of"):
        NamesDataModule(tmp_path, split="random")


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
    # split=names: every copy of a name lands in one split
    for seed in range(5):
        keep = NamesDataModule(
            folder, seed=seed, split="names", val_fraction=0.34, test_fraction=0.33
        )
        splits = keep._split(keep._records())
        homes = [s for s, records in splits.items() if any(n == "Abel" for n, _ in records)]
        assert len(homes) == 1 and sum(n == "Abel" for n, _ in splits[homes[0]]) == 2


def test_the_unique_name_split_is_stratified_seeded_and_disjoint(tmp_path):
    folder = write_toy_names(tmp_path / "toy", per_language=100)
    a, b, c = (
        NamesDataModule(folder, seed=s, split="names", val_fraction=0.1, test_fraction=0.1)
        for s in (1, 1, 2)
    )
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


def test_the_line_split_keeps_every_line_stratified_seeded_and_disjoint(tmp_path):
    # repeated lines and a name under two languages, as the tutorial's files have them
    big = [f"Ka{'lo' * (i % 4)}mi{i}" for i in range(170)] + ["Abel"] * 20 + ["Kaski"] * 10
    small = [f"Tun{'sh' * (i % 3)}{i}" for i in range(35)] + ["Abel"] * 5 + ["Son"] * 7
    folder = write(
        tmp_path / "n", {"Big.txt": "\n".join(big) + "\n", "Small.txt": "\n".join(small) + "\n"}
    )
    dm = NamesDataModule(folder, seed=3)  # the defaults: split=lines, 15% test, 10% validation
    assert (dm.split, dm.duplicates, dm.ambiguous) == ("lines", "keep", "keep")
    records = dm._records()
    lines = [(n, 0) for n in big] + [(n, 1) for n in small]
    assert sorted(records) == sorted(lines)  # every line, repeats and shared names included
    rows = dm.split_indices(records)
    every = sorted(i for split in rows.values() for i in split)
    assert every == list(range(len(records)))  # each line in exactly one split, by index
    for c, n in ((0, len(big)), (1, len(small))):  # stratified: each language cut 75/10/15
        count = {s: sum(records[i][1] == c for i in rows[s]) for s in rows}
        assert abs(count["test"] - 0.15 * n) <= 1 and abs(count["val"] - 0.1 * n) <= 1
        assert count["train"] == n - count["test"] - count["val"]
    assert NamesDataModule(folder, seed=3).split_indices(records) == rows  # seeded
    assert NamesDataModule(folder, seed=4).split_indices(records)["test"] != rows["test"]
    # the validation and test lines come from fixed shares, so a larger validation share takes
    # lines from training only and leaves the test lines as they were
    wider = NamesDataModule(folder, seed=3, val_fraction=0.2).split_indices(records)
    assert wider["test"] == rows["test"] and set(wider["val"]) > set(rows["val"])
    dm.setup()
    sizes = {s: len(dm.texts[s]) for s in ("train", "val", "test")}
    assert sizes == {s: len(rows[s]) for s in rows} and sum(sizes.values()) == len(lines)
    # a line is cut on its own: a repeated name can be in training and in the test split
    test_names = {records[i][0] for i in rows["test"]}
    assert test_names & {records[i][0] for i in rows["train"]}
    by_name = NamesDataModule(folder, seed=3, split="names")
    by_name.setup()
    assert not set(by_name.texts["test"]) & set(by_name.texts["train"])


def test_the_split_travels_in_the_checkpoint_state_so_eval_scores_the_runs_own_test(tmp_path):
    folder = write_toy_names(tmp_path / "toy", per_language=40)
    trained = NamesDataModule(folder, split="names", seed=5)
    state = trained.state_dict()
    assert state["split"] == "names"
    restored = NamesDataModule(folder, seed=5)  # split=lines by default
    restored.load_state_dict(state)
    restored.setup()
    assert restored.texts == trained.texts
    older = NamesDataModule(folder, seed=5)  # a checkpoint from before the option was cut by name
    older.load_state_dict({k: v for k, v in state.items() if k != "split"})
    assert older.split == "names"


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
    # 45 + 15 training names (75% of each): weight = total / (classes * count)
    assert dims.class_weights == pytest.approx((60 / (2 * 45), 60 / (2 * 15)), abs=1e-6)
    assert NamesDataModule(folder).dims.class_weights is None
    # tempered: the same weights to the power balance_power
    half = NamesDataModule(folder, balance="weights", balance_power=0.5).dims.class_weights
    assert half == pytest.approx(((60 / 90) ** 0.5, (60 / 30) ** 0.5), abs=1e-6)
    with pytest.raises(ValueError, match=r"data.balance_power must be in \(0, 1\], got 0"):
        NamesDataModule(folder, balance="weights", balance_power=0)

    from conftest import make_cfg

    from rnnlab.config_checks import check_values
    from rnnlab.errors import RnnlabError

    cfg = make_cfg(["data=names", f"data.data_dir={folder}", "data.balance_power=0.3"], tmp_path)
    with pytest.raises(RnnlabError, match="data.balance_power=0.3 tempers data.balance=weights"):
        check_values(cfg)
    cfg.data.balance = "weights"
    check_values(cfg)  # together they are fine


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
    # balance_power 0.5: draws in proportion to sqrt(count), so Small is sqrt(30/300) of Big
    dm = NamesDataModule(folder, balance="sampler", balance_power=0.5, batch_size=32, seed=0)
    dm.setup()
    ys = torch.cat([b["y"] for _ in range(5) for b in dm.train_dataloader()])
    expected = 1 / (1 + (300 / 30) ** 0.5)  # 0.24
    assert abs(ys.float().mean().item() - expected) < 0.05

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


def test_the_headline_breakdown_scores_seen_and_unseen_test_names_apart(cfg_factory, tmp_path):
    from collections import Counter

    from bench.names import seen_and_unseen

    folder = write_toy_names(tmp_path / "toy", per_language=60)
    kalomir = (folder / "Kalomir.txt").read_text().split()
    # repeated names (seen in training from the test split) and names under both languages,
    # three times as often under Tundish: their Kalomir test lines are practically out of reach
    with open(folder / "Kalomir.txt", "a") as f:
        f.write("\n".join(kalomir[:20]) + "\n")
    with open(folder / "Tundish.txt", "a") as f:
        f.write("\n".join(kalomir[20:40] * 3) + "\n")
    cfg = cfg_factory(*TOY, f"data.data_dir={folder}", "trainer.max_epochs=2", "logger=none")
    metrics = train(cfg)
    got = seen_and_unseen(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert got["accuracy"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    share = got["seen share"]
    assert 0 < share < 1
    assert share * got["acc seen"] + (1 - share) * got["acc unseen"] == pytest.approx(
        got["accuracy"], abs=1e-6
    )

    dm = NamesDataModule(str(folder), val_fraction=0.05, seed=cfg.seed)
    dm.setup()
    trained = {}
    for name, c in zip(dm.texts["train"], dm.splits["train"].tensors["y"].tolist(), strict=True):
        trained.setdefault(name, Counter())[c] += 1
    test = list(zip(dm.texts["test"], dm.splits["test"].tensors["y"].tolist(), strict=True))
    assert share == sum(name in trained for name, _ in test) / len(test)
    tundish = dm.class_names.index("Tundish")
    other = [n for n, c in test if n in trained and trained[n][c] < max(trained[n].values())]
    assert got["seen, other language"] == len(other) >= 1
    assert all(trained[n].most_common(1)[0][0] == tundish for n in other)


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
    # the default split keeps all 20074 lines: 15% of each language held out for the test
    dm = NamesDataModule(shared_data / "names", seed=42)
    records = dm._records()
    assert len(records) == 20074
    rows = dm.split_indices(records)
    assert {s: len(v) for s, v in rows.items()} == {"train": 15055, "val": 2007, "test": 3012}
    lines = read_names_folder(shared_data / "names", duplicates="keep")
    for c, language in enumerate(dm.class_names):
        assert abs(sum(records[i][1] == c for i in rows["test"]) - 0.15 * len(lines[language])) <= 1


@pytest.mark.slow
def test_best_recipe_reaches_83_percent_on_the_held_out_lines(cfg_factory, shared_data):
    # 0.846 +- 0.006 over seeds 1, 2, 3 (BENCHMARKS.md, "Names recipes"); the test split keeps
    # every line, repeated names and names under several languages included
    metrics = train(cfg_factory("experiment=names", f"data.data_dir={shared_data / 'names'}"))
    assert metrics["test/acc"] >= 0.83
    assert metrics["test/balanced_acc"] >= 0.48


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


@pytest.mark.slow  # a whole train.py process: about 10 s on an idle machine, a minute on a busy one
def test_the_headline_script_prints_each_seed_and_the_mean(tmp_path, monkeypatch, capsys):
    from bench.names import main

    monkeypatch.setenv("RNNLAB_NAMES_DIR", str(write_toy_names(tmp_path / "toy", per_language=60)))
    limits = ["trainer.max_epochs=1", "model.hidden_size=16", "logger=none"]
    assert main(["--seeds", "1", *limits, f"paths.log_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    seed_row = next(line for line in out.splitlines() if line.startswith("| 1 |"))
    cells = [float(v) for v in seed_row.strip("| ").split(" | ")[1:]]
    seconds, acc, balanced, f1, seen_share, acc_seen, acc_unseen, other = cells
    assert seconds > 0 and 0 <= balanced <= 1 and 0 <= f1 <= 1 and 0.3 <= acc <= 1
    # the made-up names are all different: no test name is seen in training
    assert (seen_share, acc_seen, other) == (0, 0, 0) and acc_unseen == acc
    mean_row = next(line for line in out.splitlines() if line.startswith("| mean ± std |"))
    assert len(mean_row.strip("| ").split(" | ")) == 1 + len(cells)
