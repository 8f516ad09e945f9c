"""Use after training: predict and eval from the checkpoint alone, and the data download."""

from __future__ import annotations

import shutil

import pytest
from conftest import make_cfg, run_cli

from rnnlab.benchmarks_names import write_toy_names
from rnnlab.config import RnnlabError
from rnnlab.data import NamesDataModule
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
    listed = run_cli([ckpt, "names=[Kalomirski,Tundrson]", "top_k=2"], script="scripts/predict.py")
    assert listed.returncode == 0, listed.stderr
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [(r[0], r[1]) for r in lines] == [("Kalomirski", "Kalomir"), ("Tundrson", "Tundish")]
    assert all(len(row) == 5 and 0.5 <= float(row[2]) <= 1.0 for row in lines)
    assert [r[3] for r in lines] == ["Tundish", "Kalomir"]


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


def test_fetch_names_offline_fails_with_a_clear_message(tmp_path):
    result = run_cli(
        ["url=http://127.0.0.1:9/data.zip", f"dest={tmp_path}/names", "timeout=2"],
        script="scripts/fetch_names.py",
        timeout=60,
    )
    assert result.returncode != 0
    assert "error: could not download http://127.0.0.1:9/data.zip" in result.stderr
    assert "point data.data_dir at it" in result.stderr
    assert not (tmp_path / "names").exists()


def test_fetch_names_unpacks_the_tutorial_archive_layout(tmp_path, monkeypatch):
    import io
    import urllib.request
    import zipfile

    from rnnlab.fetch import fetch_names

    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as archive:
        archive.writestr("data/eng-fra.txt", "not a names file")
        archive.writestr("data/names/Greek.txt", "Pappas\n")
        archive.writestr("data/names/Irish.txt", "Murphy\n")

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(
        urllib.request, "urlopen", lambda url, timeout: Response(payload.getvalue())
    )
    folder = fetch_names("https://example.invalid/data.zip", tmp_path / "names")
    assert sorted(p.name for p in folder.iterdir()) == ["Greek.txt", "Irish.txt"]
    assert read_back(folder) == {"Greek": ["Pappas"], "Irish": ["Murphy"]}


def read_back(folder):
    from rnnlab.data.names import read_names_folder

    return read_names_folder(folder)
