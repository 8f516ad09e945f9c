"""scripts/fetch_names.py: one sentence offline, the tutorial archive unpacked where it belongs."""

from __future__ import annotations

from conftest import run_cli


def read_back(folder):
    from rnnlab.data.names import read_names_folder

    return read_names_folder(folder)


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
