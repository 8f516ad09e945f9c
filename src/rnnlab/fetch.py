"""Download the PyTorch tutorial's names data set (no torch import: the script answers at once)."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from rnnlab.config import RnnlabError

TUTORIAL_URL = "https://download.pytorch.org/tutorial/data.zip"


def fetch_names(url: str, dest: str | Path, timeout: float = 30.0) -> Path:
    """Download the tutorial's zip and unpack its ``<Language>.txt`` files into ``dest``."""
    dest = Path(dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RnnlabError(
            f"could not download {url} ({reason}); without network access, copy a folder of "
            "<Language>.txt files and point data.data_dir at it"
        ) from e
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except zipfile.BadZipFile as e:
        raise RnnlabError(f"{url} did not return a zip archive") from e
    members = [m for m in archive.namelist() if m.endswith(".txt") and "/names/" in f"/{m}"]
    if not members:
        raise RnnlabError(f"the archive from {url} holds no names/<Language>.txt files")
    dest.mkdir(parents=True, exist_ok=True)
    for member in members:
        (dest / Path(member).name).write_bytes(archive.read(member))
    return dest
