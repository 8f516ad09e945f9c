"""Use after training: predict and eval from the checkpoint alone, and the data download."""

from __future__ import annotations

import shutil

import pytest
from conftest import make_cfg, run_cli

from rnnlab.data import NamesDataModule
from rnnlab.data.names import write_toy_names
from rnnlab.errors import RnnlabError
from rnnlab.evaluate import evaluate
from rnnlab.predict import classify, read_names
from rnnlab.train import train

NAMES = ["Kalomirski", "Tundrson", "Ravenova", "Shewley"]
EXPECTED = ["Kalomir", "Tundish", "Kalomir", "Tundish"]


@pytest.fixture(scope="module")
def names_run(tmp_path_factory):
    """A small GRU trained on two made-up languages; its data folder is deleted afterwards."""
    root = tmp_path_factory.mktemp("names")
    folder = write_toy_names(root / "toy", per_language=120)
    cfg = make_cfg(
        [
            "experiment=names",
            f"data.data_dir={folder}",
            "model.hidden_size=32",
            "model.embedding_dim=16",
            "data.batch_size=16",
            "trainer.max_epochs=5",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "logger=none",
        ],
        root / "run",
    )
    metrics = train(cfg)
    ckpt = root / "run" / "checkpoints" / "best.ckpt"
    other = write_toy_names(root / "other", per_language=30, seed=7)  # another folder to score
    shutil.copytree(folder, root / "kept")
    shutil.rmtree(folder)  # predict must need nothing but the checkpoint
    return {
        "ckpt": ckpt,
        "metrics": metrics,
        "other": other,
        "kept": root / "kept",
        "folder": folder,
    }


def test_classify_from_the_checkpoint_alone(names_run):
    predictions = classify(names_run["ckpt"], NAMES, top_k=2)
    assert [p.name for p in predictions] == NAMES
    assert [p.classes[0][0] for p in predictions] == EXPECTED
    for p in predictions:
        (first, p1), (second, p2) = p.classes
        assert first != second and 1.0 >= p1 >= p2 >= 0.0
        assert p1 + p2 == pytest.approx(1.0, abs=1e-5)  # two languages: all the probability
    with pytest.raises(RnnlabError, match="top_k must be in 1..2, got 3"):
        classify(names_run["ckpt"], NAMES, top_k=3)


def test_predict_script_prints_one_tab_separated_line_per_name(names_run):
    ckpt = f"ckpt_path={names_run['ckpt']}"
    listed = run_cli(
        [ckpt, "names=[Kalomirski,Tundrson,\U0001f600\u5c71]", "top_k=2"],
        script="scripts/predict.py",
    )
    assert listed.returncode == 0, listed.stderr
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert lines.pop() == [
        "\U0001f600\u5c71",
        "unknown: no character of this name was seen in training",
    ]
    assert [(r[0], r[1]) for r in lines] == [("Kalomirski", "Kalomir"), ("Tundrson", "Tundish")]
    assert all(len(row) == 5 and 0.5 <= float(row[2]) <= 1.0 for row in lines)
    assert [r[3] for r in lines] == ["Tundish", "Kalomir"]


def test_a_name_of_characters_never_seen_in_training_gets_no_language(names_run):
    names = ["\U0001f600\U0001f600", "\u5c71\u7530", "Kalomirski", "Kalo\U0001f600"]
    predictions = classify(names_run["ckpt"], names, top_k=2)
    assert [p.unknown for p in predictions] == [True, True, False, False]
    assert predictions[0].classes == [] and predictions[1].classes == []
    assert predictions[1].line() == (
        "\u5c71\u7530\tunknown: no character of this name was seen in training"
    )
    assert predictions[2].classes[0][0] == "Kalomir"  # one known character is enough to answer
    assert len(predictions[3].classes) == 2


def test_generation_refuses_a_temperature_that_is_not_a_number():
    from rnnlab.data.vocab import Vocabulary
    from rnnlab.tasks.lm import generate_text

    for temperature in (float("nan"), float("inf"), -1.0):
        with pytest.raises(RnnlabError, match="temperature must be a non-negative number"):
            generate_text(None, Vocabulary("ab"), "a", 3, temperature)


def test_names_come_from_a_list_a_file_or_standard_input(tmp_path, monkeypatch):
    import io

    file = tmp_path / "in.txt"
    file.write_text("Ravenova\n\n  Shewley \n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO("Dovesky\n"))
    assert read_names(str(file), "[Kaski, Tonley]") == ["Kaski", "Tonley", "Ravenova", "Shewley"]
    assert read_names("-") == ["Dovesky"]
    with pytest.raises(RnnlabError, match="input file .*nothing.txt does not exist"):
        read_names(str(tmp_path / "nothing.txt"))
    with pytest.raises(RnnlabError, match="checkpoint /nowhere/best.ckpt does not exist"):
        classify("/nowhere/best.ckpt", ["Kaski"])


def test_eval_scores_the_test_split_again_or_a_whole_other_folder(names_run):
    ckpt = names_run["ckpt"]
    shutil.copytree(names_run["kept"], names_run["folder"])  # the training folder, back again
    try:
        again = evaluate(ckpt)  # its own test split: the same names, the same numbers
    finally:
        shutil.rmtree(names_run["folder"])
    assert again["test/acc"] == pytest.approx(names_run["metrics"]["test/acc"], abs=1e-6)
    assert again["test/loss"] == pytest.approx(names_run["metrics"]["test/loss"], abs=1e-6)

    other = evaluate(ckpt, [f"data.data_dir={names_run['other']}"])
    dm = NamesDataModule(names_run["other"])
    records = dm._records()  # every name of the other folder, all of them scored
    predictions = classify(ckpt, [name for name, _ in records])
    names = dm.class_names
    correct = sum(
        p.classes[0][0] == names[c] for p, (_, c) in zip(predictions, records, strict=True)
    )
    assert other["test/acc"] == pytest.approx(correct / len(records), abs=1e-6)


def test_eval_on_a_folder_with_an_unknown_language_names_it(names_run, tmp_path):
    folder = write_toy_names(tmp_path / "more", per_language=20)
    (folder / "Klingon.txt").write_text("Worf\n")
    with pytest.raises(RnnlabError, match="Klingon.txt is a language the model does not know"):
        evaluate(names_run["ckpt"], [f"data.data_dir={folder}"])
