"""Loaders of the cancer sets: MedMNIST, BreakHis, NCT-CRC-HE, mini-MIAS, CBIS-DDSM, Wisconsin.

Each runs on the matching real set in ../shared/data when present and on a
small tree written here in the official layout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dxlab.datasets import get_dataset, read_image, split_manifest
from dxlab.datasets.manifest import SYNTHETIC_MARKER, Manifest
from dxlab.datasets.sources import breakhis, cbis_ddsm, medmnist, mini_mias, nct_crc
from dxlab.errors import ChecksumError, DatasetError

BREASTMNIST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"


def _png(path: Path, value: int = 128, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path)
    return path


def _no_group_leak(manifest: Manifest) -> None:
    per_group = manifest.table.groupby("patient_id")["split"].nunique()
    assert (per_group == 1).all(), per_group[per_group > 1]


def _fake_npz(path: Path, *, rgb: bool = False, side: int = 28, n: tuple[int, int, int] = (5, 2, 3), classes: int = 2) -> Path:
    rng = np.random.default_rng(0)
    shape = (side, side, 3) if rgb else (side, side)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).astype(np.uint8).reshape(count, 1)
    np.savez_compressed(path, **arrays)
    return path


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# -- MedMNIST -----------------------------------------------------------------

@pytest.mark.shared_data
def test_breastmnist_official_file(shared_set, tmp_path):
    npz = shared_set("medmnist") / "breastmnist.npz"
    shutil.copy(npz, tmp_path / "breastmnist.npz")  # the loader writes PNGs beside the npz: never into shared data
    manifest = get_dataset("breastmnist").load(tmp_path)

    summary = manifest.summary()
    assert summary["splits"] == {"train": 546, "val": 78, "test": 156}
    assert summary["split_class_counts"]["train"] == {"malignant": 147, "benign_or_normal": 399}
    assert summary["split_class_counts"]["test"] == {"malignant": 42, "benign_or_normal": 114}
    assert manifest.group_kind == "image" and summary["groups"] == 780
    assert manifest.classes == ("malignant", "benign_or_normal")

    with np.load(npz) as data:
        row = manifest.table[(manifest.table["split"] == "test") & (manifest.table["index"] == 7)].iloc[0]
        assert row["path"] == "breastmnist_png/test/7.png" and row["size"] == 28
        assert row["label"] == manifest.classes[int(data["test_labels"][7, 0])]
        np.testing.assert_array_equal(read_image(tmp_path / row["path"]), data["test_images"][7] / np.float32(255))

    # a second load finds the same PNGs and leaves them alone
    png = tmp_path / "breastmnist_png/train/0.png"
    before = png.stat().st_mtime_ns
    again = get_dataset("breastmnist").load(tmp_path)
    assert again.digest == manifest.digest
    assert png.stat().st_mtime_ns == before
    # official splits are kept by split_manifest
    assert split_manifest(manifest).summary()["splits"] == summary["splits"]


def test_medmnist_refuses_a_tampered_npz(tmp_path):
    npz = _fake_npz(tmp_path / "breastmnist.npz")
    with pytest.raises(ChecksumError) as info:
        get_dataset("breastmnist").load(tmp_path)
    assert str(npz) in str(info.value) and BREASTMNIST_MD5 in str(info.value)
    assert not (tmp_path / "breastmnist_png").exists()


def test_medmnist_reads_dxlab_synthetic_npz_without_the_official_md5(tmp_path):
    _fake_npz(tmp_path / "breastmnist.npz")
    (tmp_path / SYNTHETIC_MARKER).write_text("synthetic")
    manifest = get_dataset("breastmnist").load(tmp_path)
    assert manifest.synthetic and manifest.dataset == "synthetic_breastmnist"
    assert manifest.summary()["splits"] == {"train": 5, "val": 2, "test": 3}


def test_medmnist_writes_rgb_pngs_of_a_larger_size(tmp_path, monkeypatch):
    npz = _fake_npz(tmp_path / "pathmnist_64.npz", rgb=True, side=64, classes=9)
    # a stand-in for the official file: its own MD5 takes the official one's place
    monkeypatch.setitem(medmnist.OFFICIAL_MD5, "pathmnist", {**medmnist.OFFICIAL_MD5["pathmnist"], 64: _md5(npz)})
    manifest = get_dataset("pathmnist").load(tmp_path)
    assert len(manifest) == 10 and set(manifest.table["size"]) == {64}
    row = manifest.table.iloc[-1]
    assert row["path"] == "pathmnist_64_png/test/2.png" and row["label"] == "debris"  # label 2
    assert read_image(tmp_path / row["path"]).shape == (64, 64, 3)
    assert manifest.table["patient_id"].is_unique


def test_medmnist_sources_and_errors(tmp_path):
    specs = {name: get_dataset(name) for name in ("breastmnist", "dermamnist", "pathmnist", "pneumoniamnist")}
    assert {n: s.task for n, s in specs.items()} == {
        "breastmnist": "cancer_breast_us", "dermamnist": "dermatology",
        "pathmnist": "cancer_histology", "pneumoniamnist": "pneumonia_cxr",
    }
    source = specs["breastmnist"].sources[0]
    assert (source.filename, source.md5) == ("breastmnist.npz", BREASTMNIST_MD5)
    assert source.url == "https://zenodo.org/records/10519652/files/breastmnist.npz?download=1"
    assert medmnist.official_source("dermamnist", 224).md5 == "8974907d8e169bef5f5b96bc506ae45d"
    assert specs["pathmnist"].classes == nct_crc.CLASSES
    with pytest.raises(DatasetError, match="sizes 28, 64, 128, 224"):
        medmnist.load_medmnist(tmp_path, "breastmnist", size=32)
    with pytest.raises(DatasetError, match="dxlab data fetch breastmnist") as info:
        get_dataset("breastmnist").load(tmp_path)
    assert str(tmp_path) in str(info.value)


# -- BreakHis -----------------------------------------------------------------

@pytest.mark.shared_data
def test_breakhis_samples(shared_set):
    root = shared_set("histo_breakhis_samples")
    manifest = get_dataset("breakhis").load(root)
    table = manifest.table.set_index("path")
    assert len(table) == 19 and manifest.group_kind == "slide"
    assert manifest.summary()["class_counts"] == {"benign": 10, "malignant": 9}
    row = table.loc["benign/SOB_B_A-14-22549AB-40-016.png"]
    assert (row["label"], row["patient_id"], row["subtype"], row["magnification"]) == ("benign", "14-22549AB", "adenosis", 40)

    # the names agree with the labels file shipped beside them
    labels = pd.read_csv(root / "labels.csv", dtype=str).set_index("file")
    assert (table.loc[labels.index, "label"] == labels["label"]).all()
    assert (table.loc[labels.index, "patient_id"] == labels["patient_slide"]).all()
    assert (table.loc[labels.index, "subtype"] == labels["tumor_subtype"]).all()
    assert (table.loc[labels.index, "magnification"].astype(str) + "X" == labels["magnification"]).all()

    split = split_manifest(manifest, seed=3)
    _no_group_leak(split)
    assert split.table.groupby("patient_id").size()["14-22549AB"] == 2


def _breakhis_tree(root: Path) -> Path:
    base = root / "BreaKHis_v1/histology_slides/breast"
    slides = {
        ("benign", "adenosis", "A", "22549AB"), ("benign", "fibroadenoma", "F", "14134E"),
        ("benign", "tubular_adenoma", "TA", "16184CD"), ("benign", "phyllodes_tumor", "PT", "22704"),
        ("malignant", "ductal_carcinoma", "DC", "3909"), ("malignant", "lobular_carcinoma", "LC", "13412"),
        ("malignant", "mucinous_carcinoma", "MC", "18842D"), ("malignant", "papillary_carcinoma", "PC", "9146"),
    }
    for cls, folder, code, slide in sorted(slides):
        letter = cls[0].upper()
        for mag in (40, 100, 200, 400):
            for seq in (1, 2):
                name = f"SOB_{letter}_{code}-14-{slide}-{mag}-{seq:03d}.png"
                _png(base / cls / "SOB" / folder / f"SOB_{letter}_{code}_14-{slide}" / f"{mag}X" / name, value=seq * 40)
    return root


def test_breakhis_official_tree_keeps_slides_whole(tmp_path):
    manifest = get_dataset("breakhis").load(_breakhis_tree(tmp_path))
    assert len(manifest) == 64 and manifest.table["patient_id"].nunique() == 8
    row = manifest.table[manifest.table["path"].str.endswith("SOB_M_MC-14-18842D-200-002.png")].iloc[0]
    assert row["path"].startswith("BreaKHis_v1/histology_slides/breast/malignant/SOB/mucinous_carcinoma/")
    assert (row["label"], row["patient_id"], row["subtype_code"], row["magnification"], row["sequence"]) == (
        "malignant", "14-18842D", "MC", 200, 2)
    split = split_manifest(manifest, val=0.25, test=0.25, seed=0)
    _no_group_leak(split)
    assert set(split.table["split"]) == {"train", "val", "test"}
    assert split.digest == split_manifest(manifest, val=0.25, test=0.25, seed=0).digest


def test_breakhis_bad_names_and_folders(tmp_path):
    with pytest.raises(DatasetError, match="contradicts subtype DC"):
        breakhis.parse_breakhis_name("SOB_B_DC-14-3909-40-001.png")
    with pytest.raises(DatasetError, match="unknown tumour subtype code 'XX'") as info:
        breakhis.parse_breakhis_name("SOB_M_XX-14-3909-40-001.png")
    assert "SOB_M_XX-14-3909-40-001.png" in str(info.value)
    with pytest.raises(DatasetError, match="folder not found") as info:
        get_dataset("breakhis").load(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(info.value)
    with pytest.raises(DatasetError, match="no BreakHis images found"):
        get_dataset("breakhis").load(tmp_path)


# -- NCT-CRC-HE ---------------------------------------------------------------

@pytest.mark.shared_data
def test_nct_crc_samples(shared_set):
    manifest = get_dataset("nct_crc").load(shared_set("histo_nct_crc_he_samples"))
    table = manifest.table.set_index("path")
    assert len(table) == 9 and set(table["code"]) == set(nct_crc.CODES)
    assert manifest.summary()["class_counts"] == {c: 1 for c in nct_crc.CLASSES}
    assert table.loc["TUM-AACHEHDV.tif", "label"] == "colorectal_adenocarcinoma_epithelium"
    assert table.loc["MUS-AACVWIEK.tif", "label"] == "smooth_muscle"
    assert (table["split"] == "").all() and manifest.group_kind == "image"
    assert read_image(manifest.resolve("ADI-AAQEFMRI.tif")).shape == (224, 224, 3)


def test_nct_crc_official_folders_give_the_test_split(tmp_path):
    for code in nct_crc.CODES:
        for i in range(4):
            _png(tmp_path / "NCT-CRC-HE-100K" / code / f"{code}-TRAIN{i:03d}.tif")
        _png(tmp_path / "CRC-VAL-HE-7K" / code / f"{code}-TCGA-VAL{code}.tif")
    manifest = get_dataset("nct_crc").load(tmp_path)
    table = manifest.table
    assert len(table) == 45
    test = table[table["split"] == "test"]
    assert len(test) == 9 and (test["source_set"] == "CRC-VAL-HE-7K").all()
    assert table.set_index("path").loc["CRC-VAL-HE-7K/STR/STR-TCGA-VALSTR.tif", "label"] == "cancer_associated_stroma"
    split = split_manifest(manifest, seed=1)
    assert split.subset("test").table["path"].tolist() == test["path"].tolist()  # the official test set is kept
    assert set(split.table["split"]) == {"train", "val", "test"}


def test_nct_crc_refuses_inconsistent_trees(tmp_path):
    _png(tmp_path / "a/NCT-CRC-HE-100K/ADI/ADI-AAAA.tif")
    _png(tmp_path / "a/NCT-CRC-HE-100K-NONORM/ADI/ADI-AAAA.tif")
    with pytest.raises(DatasetError, match="same patches"):
        get_dataset("nct_crc").load(tmp_path / "a")
    _png(tmp_path / "b/TUM/ADI-BBBB.tif")
    with pytest.raises(DatasetError, match="patch named ADI lies in the TUM class folder") as info:
        get_dataset("nct_crc").load(tmp_path / "b")
    assert "ADI-BBBB.tif" in str(info.value)


# -- mini-MIAS ----------------------------------------------------------------

@pytest.mark.shared_data
def test_mini_mias_official_info_and_pgms(shared_set, caplog):
    root = shared_set("mammo_mini_mias_512")
    info = mini_mias.read_info(root / "ORIG_Info.txt")
    labels = pd.Series({ref: entry["label"] for ref, entry in info.items()})
    assert len(info) == 322 and labels.value_counts().to_dict() == {"normal": 207, "benign": 63, "malignant": 52}
    assert info["mdb216"]["lesions"] == [{"class": "CALC", "severity": "malignant", "x": None, "y": None, "y_from_top": None, "radius": None}]
    assert len(info["mdb005"]["lesions"]) == 2

    with caplog.at_level(logging.WARNING):
        manifest = get_dataset("mini_mias").load(root)
    assert "316 of 322 images listed in ORIG_Info.txt are absent" in caplog.text
    table = manifest.table.set_index("image_id")
    assert table["label"].to_dict() == {
        "mdb001": "benign", "mdb002": "benign", "mdb003": "normal",
        "mdb004": "normal", "mdb023": "malignant", "mdb028": "malignant",
    }
    assert table["patient_id"].to_dict() == {
        "mdb001": "mias-001", "mdb002": "mias-001", "mdb003": "mias-002",
        "mdb004": "mias-002", "mdb023": "mias-012", "mdb028": "mias-014",
    }
    row = table.loc["mdb001"]
    assert row["path"] == "originals_1024_pgm/mdb001.pgm" and row["side"] == "right"
    assert row["background_tissue"] == "fatty_glandular"
    assert json.loads(row["lesions"]) == [{"class": "CIRC", "severity": "benign", "x": 535, "y": 425, "y_from_top": 598, "radius": 197}]
    # the PGM is the official file: its hash is the one the shared labels file records
    shared = pd.read_csv(root / "labels.csv", dtype=str).set_index("ref")
    assert row["sha256"] == shared.loc["mdb001", "orig_pgm_sha256"]
    assert read_image(manifest.resolve(row["path"])).shape == (1024, 1024)


_INFO = """MIAS header text, ignored
mdb001 G CIRC B 535 425 197
mdb002 G NORM
mdb003 D NORM
mdb004 D NORM
mdb005 F CIRC B 477 133 30
mdb005 F SPIC M 500 168 26
mdb006 F NORM
mdb007 G CALC M *NOTE 3*
mdb008 G NORM
mdb009 F NORM
mdb010 F NORM
"""


def _mias_tree(root: Path, refs: range = range(1, 11)) -> Path:
    (root / "info").mkdir(parents=True)
    (root / "info" / "Info.txt").write_text(_INFO)
    for n in refs:
        path = root / "pgm" / f"mdb{n:03d}.pgm"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), n * 10).save(path)
    return root


def test_mini_mias_written_tree_keeps_women_whole(tmp_path):
    manifest = get_dataset("mini_mias").load(_mias_tree(tmp_path))
    table = manifest.table.set_index("image_id")
    assert len(table) == 10 and table["patient_id"].nunique() == 5
    assert table.loc["mdb005", "label"] == "malignant" and table.loc["mdb005", "abnormalities"] == "CIRC;SPIC"
    assert table.loc["mdb007", "label"] == "malignant" and table.loc["mdb007", "n_lesions"] == 1
    assert table.loc["mdb002", "label"] == "normal" and table.loc["mdb002", "side"] == "left"
    split = split_manifest(manifest, val=0.2, test=0.2, seed=0)
    _no_group_leak(split)
    loaded = Manifest.load(split.save(tmp_path / "m.csv"))  # a JSON column survives the round trip
    assert loaded.digest == split.digest


def test_mini_mias_errors(tmp_path):
    root = _mias_tree(tmp_path / "none", refs=range(11, 13))
    with pytest.raises(DatasetError, match="none of the 10 images listed in Info.txt is here"):
        get_dataset("mini_mias").load(root)
    root = _mias_tree(tmp_path / "two")
    (root / "ORIG_Info.txt").write_text(_INFO)
    (root / "info" / "Info.txt").rename(root / "info" / "Copy_Info.txt")
    with pytest.raises(DatasetError, match="several Info tables found"):
        get_dataset("mini_mias").load(root)
    bad = tmp_path / "bad.txt"
    bad.write_text("mdb001 G CIRC B 535 x 197\n")
    with pytest.raises(DatasetError, match="line 1 is not an Info.txt row") as info:
        mini_mias.read_info(bad)
    assert str(bad) in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no Info.txt table found"):
        get_dataset("mini_mias").load(tmp_path / "empty")


# -- CBIS-DDSM ----------------------------------------------------------------

_UID = "1.3.6.1.4.1.9590.100.1.2"


def _dicom(path: Path) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    uid = generate_uid(entropy_srcs=[path.as_posix()])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography, for presentation
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, uid, "MG"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.arange(16, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


_MASS_COLUMNS = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id", "abnormality type",
                 "mass shape", "mass margins", "assessment", "pathology", "subtlety", "image file path",
                 "cropped image file path", "ROI mask file path"]
_CALC_COLUMNS = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id", "abnormality type",
                 "calc type", "calc distribution", "assessment", "pathology", "subtlety", "image file path",
                 "cropped image file path", "ROI mask file path"]


def _cbis_row(kind: str, split: str, patient: str, side: str, view: str, n: int, pathology: str, density: str = "2") -> list[str]:
    prefix = f"{'Mass' if kind == 'mass' else 'Calc'}-{'Training' if split == 'train' else 'Test'}_{patient}_{side}_{view}"
    return [patient, density, side, view, str(n), "mass" if kind == "mass" else "calcification", "OVAL", "CIRCUMSCRIBED", "4",
            pathology, "3", f"{prefix}/{_UID}.1/{_UID}.2/000000.dcm", f"{prefix}_{n}/{_UID}.3/{_UID}.4/000000.dcm",
            f"{prefix}_{n}/{_UID}.3/{_UID}.4/000001.dcm\n"]


def _cbis_tree(root: Path, *, absent: tuple[str, ...] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = {
        ("mass", "train"): [
            _cbis_row("mass", "train", "P_00001", "LEFT", "CC", 1, "BENIGN"),
            _cbis_row("mass", "train", "P_00002", "RIGHT", "MLO", 1, "BENIGN_WITHOUT_CALLBACK"),
            _cbis_row("mass", "train", "P_00002", "RIGHT", "MLO", 2, "BENIGN"),
            _cbis_row("mass", "train", "P_00004", "LEFT", "MLO", 1, "MALIGNANT"),
            _cbis_row("mass", "train", "P_00005", "LEFT", "CC", 1, "MALIGNANT"),
        ],
        ("calc", "train"): [_cbis_row("calc", "train", "P_00001", "LEFT", "CC", 1, "MALIGNANT", density="3")],
        ("mass", "test"): [_cbis_row("mass", "test", "P_00003", "RIGHT", "CC", 1, "MALIGNANT")],
        ("calc", "test"): [_cbis_row("calc", "test", "P_00004", "RIGHT", "CC", 1, "BENIGN")],
    }
    for (kind, split), records in rows.items():
        columns = _MASS_COLUMNS if kind == "mass" else _CALC_COLUMNS
        pd.DataFrame(records, columns=columns).to_csv(root / f"{kind}_case_description_{split}_set.csv", index=False)
        for record in records:
            subject = record[11].split("/")[0]
            if subject in absent:
                continue
            full = root / "CBIS-DDSM" / subject / "07-20-2016-DDSM-12345" / "1.000000-full mammogram images-24515" / "1-1.dcm"
            if not full.exists():
                _dicom(full)
            roi = root / "CBIS-DDSM" / f"{subject}_{record[4]}" / "08-07-2016-DDSM-23456"
            _dicom(roi / "1.000000-ROI mask images-1234" / "1-1.dcm")
            _dicom(roi / "1.000000-cropped images-5678" / "1-2.dcm")
    return root


def test_cbis_ddsm_written_tree(tmp_path, caplog):
    root = _cbis_tree(tmp_path, absent=("Mass-Training_P_00005_LEFT_CC",))
    with caplog.at_level(logging.WARNING):
        manifest = get_dataset("cbis_ddsm").load(root)
    assert "1 mammograms listed in the description CSVs have no DICOM file here" in caplog.text
    assert "1 patients are in both the official training and test CSVs" in caplog.text
    table = manifest.table.set_index(["patient_id", "side", "view"])
    assert len(table) == 5

    merged = table.loc[("P_00001", "left", "CC")]  # one mammogram with a benign mass and a malignant calcification
    assert merged["label"] == "malignant" and merged["split"] == "train"
    assert merged["path"] == "CBIS-DDSM/Calc-Training_P_00001_LEFT_CC/07-20-2016-DDSM-12345/1.000000-full mammogram images-24515/1-1.dcm"
    assert merged["abnormality_types"] == "calcification;mass" and merged["n_abnormalities"] == 2
    assert merged["pathologies"] == "BENIGN;MALIGNANT" and merged["breast_density"] == "3"  # from the row whose file is used

    two_benign = table.loc[("P_00002", "right", "MLO")]
    assert (two_benign["label"], two_benign["n_abnormalities"]) == ("benign", 2)
    assert table.loc[("P_00003", "right", "CC"), "split"] == "test"
    # P_00004 is in the mass training CSV and the calcification test CSV: all of them go to test
    assert set(table.loc["P_00004", "split"]) == {"test"}
    assert dict(zip(table.loc["P_00004"].index.get_level_values("side"), table.loc["P_00004", "label"])) == {
        "left": "malignant", "right": "benign"}

    split = split_manifest(manifest, seed=0)
    _no_group_leak(split)
    assert split.subset("test").table["patient_id"].tolist() == ["P_00003", "P_00004", "P_00004"]


def test_cbis_ddsm_bad_inputs(tmp_path):
    root = _cbis_tree(tmp_path / "a")
    csv = root / "mass_case_description_test_set.csv"
    pd.read_csv(csv, dtype=str).drop(columns=["pathology"]).to_csv(csv, index=False)
    with pytest.raises(DatasetError, match="missing column\\(s\\) 'pathology'") as info:
        get_dataset("cbis_ddsm").load(root)
    assert str(csv) in str(info.value)

    root = _cbis_tree(tmp_path / "b")
    csv = root / "calc_case_description_test_set.csv"
    table = pd.read_csv(csv, dtype=str)
    table.loc[0, "pathology"] = "UNKNOWN"
    table.to_csv(csv, index=False)
    with pytest.raises(DatasetError, match="row 2: pathology 'UNKNOWN' is not one of MALIGNANT, BENIGN"):
        get_dataset("cbis_ddsm").load(root)

    root = _cbis_tree(tmp_path / "c")
    shutil.rmtree(root / "CBIS-DDSM")
    with pytest.raises(DatasetError, match="none of the 7 mammograms"):
        get_dataset("cbis_ddsm").load(root)
    (tmp_path / "d").mkdir()
    with pytest.raises(DatasetError, match="no CBIS-DDSM description CSVs found"):
        get_dataset("cbis_ddsm").load(tmp_path / "d")
    assert get_dataset("cbis_ddsm").access == "manual"


# -- Breast Cancer Wisconsin ----------------------------------------------------

def test_wisconsin_from_scikit_learn(tmp_path):
    manifest = get_dataset("wisconsin").load(tmp_path / "never-created")
    assert len(manifest) == 569 and manifest.summary()["class_counts"] == {"malignant": 212, "benign": 357}
    assert manifest.classes == ("malignant", "benign") and manifest.task == "cancer_tabular"
    table = manifest.table
    assert len(manifest.metadata_columns) == 30
    assert {"mean_radius", "radius_error", "worst_concave_points", "mean_fractal_dimension"} <= set(table.columns)
    first = table.iloc[0]
    assert (first["path"], first["patient_id"], first["label"], first["mean_radius"]) == ("", "wdbc-0", "malignant", 17.99)
    assert table["sha256"].is_unique and table["sha256"].str.fullmatch("[0-9a-f]{64}").all()
    assert not (tmp_path / "never-created").exists()
    split = split_manifest(manifest, seed=0)
    splits = split.summary()["splits"]
    assert splits["train"] == 398 and splits["val"] + splits["test"] == 171
    assert Manifest.load(split.save(tmp_path / "w.csv")).digest == split.digest


def test_registry_entries_say_where_the_data_comes_from():
    for name in ("breastmnist", "dermamnist", "pathmnist", "pneumoniamnist", "breakhis", "nct_crc", "mini_mias", "cbis_ddsm", "wisconsin"):
        spec = get_dataset(name)
        assert spec.homepage.startswith("http") and spec.licence and spec.citation and spec.layout, name
        assert spec.access in ("open", "manual", "bundled"), name
        if spec.access == "manual":
            assert spec.access_note and not spec.sources, name
