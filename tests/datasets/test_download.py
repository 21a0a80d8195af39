"""``download.fetch`` against ``file://`` sources: checksums decide what is kept. No network."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dxlab.datasets import get_dataset, registry
from dxlab.datasets.download import fetch
from dxlab.datasets.importers import import_folder
from dxlab.datasets.manifest import Manifest
from dxlab.datasets.registry import DatasetSpec, Source
from dxlab.errors import ChecksumError, DataUnavailableError

BREASTMNIST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"


def _zip_of_images(path: Path, shade: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for label in ("benign", "malignant"):
            for i in range(2):
                buffer = io.BytesIO()
                Image.new("L", (6, 6), shade + i).save(buffer, format="PNG")
                zf.writestr(f"tiny/{label}/{label}_{i}.png", buffer.getvalue())
    return path


def _tiny_spec(url: str, sha256: str) -> DatasetSpec:
    return DatasetSpec(
        name="tiny_fetch_test", title="tiny fetch test", task="cancer_histology", modality="test",
        classes=("benign", "malignant"), licence="test", citation="test", homepage="https://example.org/tiny",
        loader=lambda root: import_folder(root / "tiny", task="cancer_histology", dataset="tiny_fetch_test"),
        sources=(Source(url=url, filename="tiny.zip", sha256=sha256),), layout="tiny/<class>/*.png",
    )


def test_fetch_keeps_a_verified_archive_and_refuses_a_changed_one(tmp_path, monkeypatch):
    good = _zip_of_images(tmp_path / "server/good/tiny.zip", shade=10)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    monkeypatch.setitem(registry._REGISTRY, "tiny_fetch_test", _tiny_spec(good.as_uri(), digest))

    manifest, folder = fetch("tiny_fetch_test", tmp_path / "data/good")
    assert folder == tmp_path / "data/good" and (folder / "tiny.zip").read_bytes() == good.read_bytes()
    assert len(manifest) == 4 and manifest.summary()["class_counts"] == {"benign": 2, "malignant": 2}
    assert Manifest.load(folder / "manifest.csv").digest == manifest.digest

    bad = _zip_of_images(tmp_path / "server/bad/tiny.zip", shade=99)  # same name, other bytes
    monkeypatch.setitem(registry._REGISTRY, "tiny_fetch_test", _tiny_spec(bad.as_uri(), digest))
    dest = tmp_path / "data/bad"
    with pytest.raises(ChecksumError, match=f"does not match the published {digest}") as info:
        fetch("tiny_fetch_test", dest)
    assert "tiny.zip" in str(info.value) and bad.as_uri() in str(info.value)
    assert not dest.exists()  # neither the download, nor its .part, nor anything unpacked, nor the folder


@pytest.mark.shared_data
def test_fetch_breastmnist_from_a_file_url(shared_set, tmp_path, monkeypatch):
    official = shared_set("medmnist") / "breastmnist.npz"
    served = tmp_path / "zenodo/breastmnist.npz"
    served.parent.mkdir()
    shutil.copy(official, served)
    spec = get_dataset("breastmnist")
    source = dataclasses.replace(spec.sources[0], url=served.as_uri())
    assert source.md5 == BREASTMNIST_MD5
    monkeypatch.setitem(registry._REGISTRY, "breastmnist", dataclasses.replace(spec, sources=(source,)))

    manifest, folder = fetch("breastmnist", tmp_path / "data/breastmnist")
    assert len(manifest) == 780 and manifest.summary()["splits"] == {"train": 546, "val": 78, "test": 156}
    assert (folder / "breastmnist.npz").is_file() and (folder / "breastmnist_png/val/77.png").is_file()

    # a changed file at the official URL is refused and nothing of it is kept
    with np.load(official) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["test_labels"] = 1 - arrays["test_labels"]  # flipped labels: a plausible-looking, wrong file
    np.savez_compressed(served, **arrays)
    dest = tmp_path / "data/tampered"
    with pytest.raises(ChecksumError, match=BREASTMNIST_MD5):
        fetch("breastmnist", dest)
    assert not dest.exists()


def test_fetch_of_a_manual_set_says_where_to_get_it():
    with pytest.raises(DataUnavailableError, match="NBIA Data Retriever") as info:
        fetch("cbis_ddsm")
    assert "https://www.cancerimagingarchive.net/collection/cbis-ddsm/" in str(info.value)
    assert "dxlab data import cbis_ddsm" in str(info.value)
