"""Fetching public data sets from their official sources, with checksums.

``fetch`` downloads every source file of an open data set into the data root,
checks its SHA-256 (or official MD5), unpacks archives and runs the set's
loader. Sets that must be downloaded by hand (a registration page, or no published
checksum to verify), and any download that fails (for
instance offline), fail at once with a message that says where to get the data
and which ``dxlab data import`` command to run on it.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from dxlab.datasets.manifest import Manifest
from dxlab.datasets.registry import DatasetSpec, Source, get_dataset
from dxlab.errors import ChecksumError, DataUnavailableError, DatasetError
from dxlab.settings import get_settings

log = logging.getLogger(__name__)
TIMEOUT_S = 30


def import_hint(spec: DatasetSpec, folder: str | Path | None = None) -> str:
    return f"dxlab data import {spec.name} {folder or '/path/to/' + spec.name} --out {spec.name}.manifest.csv"


def verify_checksum(path: Path, source: Source) -> None:
    """Raise :class:`ChecksumError` when ``path`` does not match ``source``'s checksum."""
    algo, expected = ("sha256", source.sha256) if source.sha256 else ("md5", source.md5)
    digest = hashlib.new(algo)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    if digest.hexdigest().lower() != str(expected).lower():
        raise ChecksumError(
            f"{algo} {digest.hexdigest()} does not match the published {expected} of {source.url}; the file is corrupt or was changed, and was not used",
            path,
        )


def fetch(name: str, dest: str | Path | None = None) -> tuple[Manifest, Path]:
    """Download, verify and load data set ``name``; returns its manifest and folder.

    The manifest is also saved as ``<folder>/manifest.csv``.
    """
    spec = get_dataset(name)
    folder = Path(dest).expanduser() if dest else get_settings().data_root / spec.name
    if spec.access == "manual":
        raise DataUnavailableError(
            f"{spec.title} is not downloaded by dxlab: {spec.access_note}. "
            f"Get it from {spec.homepage}, unpack it ({spec.layout or 'official layout'}), then run: {import_hint(spec)}"
        )
    if spec.access == "bundled":
        manifest = spec.load(folder)
    else:
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        try:
            for source in spec.sources:
                _fetch_one(spec, source, folder)
        except DatasetError:
            if created and not any(folder.iterdir()):
                folder.rmdir()  # a failed fetch leaves nothing behind
            raise
        manifest = spec.load(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest.save(folder / "manifest.csv")
    return manifest, folder


def _fetch_one(spec: DatasetSpec, source: Source, folder: Path) -> None:
    target = folder / source.filename
    if target.is_file():
        try:
            verify_checksum(target, source)
            log.info("%s already present and verified", target)
            _unpack(target, folder)
            return
        except ChecksumError:
            log.warning("%s is present but its checksum is wrong: downloading it again", target)
    partial = target.with_name(target.name + ".part")
    log.info("downloading %s", source.url)
    try:
        with urllib.request.urlopen(source.url, timeout=TIMEOUT_S) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise DataUnavailableError(
            f"could not download {source.url} ({exc}). If this machine is offline, download {source.filename} "
            f"elsewhere ({spec.homepage}), copy it into {folder} and run 'dxlab data fetch {spec.name}' again "
            f"(the file's checksum is verified), or run: {import_hint(spec, folder)}"
        ) from exc
    try:
        verify_checksum(partial, source)
    except ChecksumError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    _unpack(target, folder)


def _unpack(archive: Path, folder: Path) -> None:
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            _check_members(archive, folder, zf.namelist())
            zf.extractall(folder)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tf:
            _check_members(archive, folder, tf.getnames())
            tf.extractall(folder, filter="data")


def _check_members(archive: Path, folder: Path, names: list[str]) -> None:
    base = folder.resolve()
    for member in names:
        target = (base / member).resolve()
        if base not in target.parents and target != base:
            raise DatasetError(f"archive member {member!r} would be written outside {folder}; refusing to unpack", archive)
