"""Download the data sets the recipes read: the PyTorch tutorial's names and MNIST (no torch import:
the scripts answer at once)."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from rnnlab.errors import RnnlabError

TUTORIAL_URL = "https://download.pytorch.org/tutorial/data.zip"


def download(url: str, timeout: float, offline_hint: str) -> bytes:
    """The bytes at ``url``, or one sentence saying what to do without network access."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RnnlabError(
            f"could not download {url} ({reason}); without network access, {offline_hint} "
            "and point data.data_dir at it"
        ) from e


def fetch_names(url: str, dest: str | Path, timeout: float = 30.0) -> Path:
    """Download the tutorial's zip and unpack its ``<Language>.txt`` files into ``dest``."""
    dest = Path(dest)
    payload = download(url, timeout, "copy a folder of <Language>.txt files")
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


MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def fetch_mnist(url: str, dest: str | Path, timeout: float = 30.0) -> Path:
    """Download MNIST's four gzipped IDX files from the folder at ``url`` into ``dest``.

    Every file is downloaded and checked (gzip, then the IDX magic number) before any is written,
    so a failed download leaves ``dest`` as it was.
    """
    import gzip
    import zlib

    dest = Path(dest)
    base = url if url.endswith("/") else url + "/"
    payloads: dict[str, bytes] = {}
    for name in MNIST_FILES:
        payload = download(base + name, timeout, "copy the four MNIST IDX files into a folder")
        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(payload)).read(4)
        except (OSError, EOFError, zlib.error) as e:
            raise RnnlabError(f"{base + name} did not return a gzip file") from e
        if len(head) < 4 or head[:3] != b"\x00\x00\x08":
            raise RnnlabError(f"{base + name} is not an IDX file (magic number 0x{head.hex()})")
        payloads[name] = payload
    dest.mkdir(parents=True, exist_ok=True)
    for name, payload in payloads.items():
        (dest / name).write_bytes(payload)
    return dest


def main(argv: list[str], usage: str, fetch, url: str, folder_name: str, done) -> int:
    """The command line of a fetch script: ``url=``, ``dest=`` (default ``data/<folder_name>``)
    and ``timeout=`` (seconds); ``done(folder)`` says what was fetched. Returns the exit status."""
    import sys

    if any(a in ("-h", "--help") for a in argv):
        print(usage.strip())
        return 0
    keys = ("url", "dest", "timeout")
    args = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in keys:
            print(
                f"error: unknown argument {item!r}; expected key=value with key in {keys}",
                file=sys.stderr,
            )
            return 2
        args[key] = value
    from rnnlab.config import ROOT

    try:
        timeout = float(args.get("timeout", 30))
        if not timeout > 0:
            raise ValueError
    except ValueError:
        print(
            f"error: timeout must be a positive number of seconds, got {args['timeout']!r}",
            file=sys.stderr,
        )
        return 2
    try:
        folder = fetch(
            args.get("url", url), args.get("dest", str(ROOT / "data" / folder_name)), timeout
        )
    except RnnlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(done(folder))
    return 0
