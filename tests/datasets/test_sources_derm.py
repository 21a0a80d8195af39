"""HAM10000, ISIC 2019 and PH2 loaders: real HAM10000 images, and trees written in the official layouts."""

import logging
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dxlab.datasets import get_dataset
from dxlab.datasets.download import fetch
from dxlab.datasets.sources.ham10000 import load_ham10000
from dxlab.datasets.sources.ph2 import read_ph2_table
from dxlab.errors import DatasetError, DataUnavailableError

HAM_HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"


def _image(path, value=0, fmt=None, size=(6, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path, format=fmt)


# -- HAM10000 ------------------------------------------------------------------

@pytest.fixture
def ham_official(shared_set, tmp_path):
    """The 70 real images and the full metadata table, arranged as the official download."""
    src = shared_set("derm_ham10000_sample70")
    root = tmp_path / "HAM10000"
    (root / "HAM10000_images_part_1").mkdir(parents=True)
    (root / "HAM10000_metadata.csv").symlink_to(src / "HAM10000_metadata_full.csv")
    for image in sorted(src.glob("*/ISIC_*.jpg")):
        (root / "HAM10000_images_part_1" / image.name).symlink_to(image)
    return root, pd.read_csv(src / "labels.csv", dtype=str, keep_default_na=False)


@pytest.mark.shared_data
def test_ham10000_real_images_and_metadata(ham_official, caplog):
    root, truth = ham_official
    with caplog.at_level(logging.WARNING):
        m = get_dataset("ham10000").load(root)
    # the full table (with its leading index column and repeated rows) lists 10,015 images; 70 are here
    assert "9930 rows repeat an earlier row exactly" in caplog.text
    assert "9945 of 10015 images have no file" in caplog.text
    assert len(m) == 70 and m.group_kind == "lesion"
    assert m.summary()["class_counts"] == {c: 10 for c in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")}
    t = m.table.set_index("image_id")
    row = t.loc["ISIC_0026083"]
    assert (row["label"], row["patient_id"], row["sex"], row["age"], row["site"], row["dx_type"]) == (
        "akiec", "HAM_0000552", "male", 55.0, "lower extremity", "histo")
    assert row["path"] == "HAM10000_images_part_1/ISIC_0026083.jpg"
    for rec in truth.itertuples():
        got = t.loc[rec.image_id]
        unknown_to_empty = {"unknown": ""}
        assert (got["label"], got["patient_id"], got["sex"], got["site"]) == (
            rec.label, rec.lesion_id, unknown_to_empty.get(rec.sex, rec.sex), unknown_to_empty.get(rec.localization, rec.localization))
        assert got["age"] == (float(rec.age) if rec.age else None) or (pd.isna(got["age"]) and not rec.age)


@pytest.mark.shared_data
def test_ham10000_metadata_path_option(shared_set):
    src = shared_set("derm_ham10000_sample70")
    m = load_ham10000(src, metadata=src / "HAM10000_metadata_full.csv")
    assert len(m) == 70
    assert m.table.set_index("image_id").loc["ISIC_0026083", "path"] == "akiec/ISIC_0026083.jpg"


def _ham_tree(root, lines, images=("ISIC_0000001", "ISIC_0000002", "ISIC_0000003"), name="HAM10000_metadata.csv"):
    for i, image in enumerate(images):
        _image(root / ("HAM10000_images_part_1" if i % 2 == 0 else "HAM10000_images_part_2") / f"{image}.jpg", i)
    (root / name).write_text("\n".join(lines) + "\n")


def test_ham10000_partial_download_and_lesion_groups(tmp_path, caplog):
    _ham_tree(tmp_path, [
        HAM_HEADER,
        "HAM_0000001,ISIC_0000001,mel,histo,45.0,male,back",
        "HAM_0000001,ISIC_0000002,mel,histo,45.0,male,back",
        "HAM_0000002,ISIC_0000003,nv,follow_up,,unknown,unknown",
        "HAM_0000003,ISIC_0000004,bkl,consensus,60.0,female,face",
    ])
    with caplog.at_level(logging.WARNING):
        m = get_dataset("ham10000").load(tmp_path)
    assert "1 of 4 images have no file" in caplog.text and "ISIC_0000004" in caplog.text
    t = m.table.set_index("image_id")
    assert list(t.index) == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    assert t["patient_id"].tolist() == ["HAM_0000001", "HAM_0000001", "HAM_0000002"]
    assert t.loc["ISIC_0000003", "sex"] == "" and t.loc["ISIC_0000003", "site"] == ""
    assert pd.isna(t.loc["ISIC_0000003", "age"]) and t.loc["ISIC_0000001", "age"] == 45.0
    assert t.loc["ISIC_0000002", "path"] == "HAM10000_images_part_2/ISIC_0000002.jpg"


def test_ham10000_dataverse_tab_file(tmp_path):
    _ham_tree(tmp_path, [HAM_HEADER.replace(",", "\t"), '"HAM_0000009"\t"ISIC_0000001"\t"df"\t"histo"\t30\t"female"\t"trunk"'],
              images=("ISIC_0000001",), name="HAM10000_metadata.tab")
    t = get_dataset("ham10000").load(tmp_path).table
    assert t[["label", "patient_id", "sex", "age", "site"]].values.tolist() == [["df", "HAM_0000009", "female", 30.0, "trunk"]]


def test_ham10000_bad_inputs_name_the_file(tmp_path):
    spec = get_dataset("ham10000")
    with pytest.raises(DatasetError, match="folder not found"):
        spec.load(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no HAM10000 metadata table found"):
        spec.load(tmp_path)
    _ham_tree(tmp_path, ["lesion_id,image_id,dx_type,age", "HAM_0000001,ISIC_0000001,histo,45"])
    with pytest.raises(DatasetError, match=r"HAM10000_metadata.csv: missing column\(s\) 'dx'; the file has 'lesion_id', 'image_id'"):
        spec.load(tmp_path)
    _ham_tree(tmp_path, [HAM_HEADER, "HAM_0000001,ISIC_0000001,melanoma,histo,45,male,back"])
    with pytest.raises(DatasetError, match=r"HAM10000_metadata.csv: row 2: diagnosis \(column 'dx'\) 'melanoma' is not one of akiec"):
        spec.load(tmp_path)
    _ham_tree(tmp_path, [HAM_HEADER, "HAM_0000001,ISIC_0000001,mel,histo,45,male,back", "HAM_0000002,ISIC_0000001,nv,histo,45,male,back"])
    with pytest.raises(DatasetError, match=r"image 'ISIC_0000001' has conflicting rows \(rows 2 and 3\)"):
        spec.load(tmp_path)
    _ham_tree(tmp_path, [HAM_HEADER, "HAM_0000001,ISIC_0000009,mel,histo,45,male,back"])
    with pytest.raises(DatasetError, match=r"HAM10000_metadata.csv: none of its 1 images \(first 'ISIC_0000009'\) has a file under"):
        spec.load(tmp_path)


# -- ISIC 2019 -------------------------------------------------------------------

ISIC_GT = [
    "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK",
    "ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
    "ISIC_0000002,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
    "ISIC_0000004_downsampled,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0",
    "ISIC_0024306,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
    "ISIC_0073247,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0",
]
ISIC_META = [
    "image,age_approx,anatom_site_general,lesion_id,sex",
    "ISIC_0000000,55.0,anterior torso,,female",
    "ISIC_0000002,60.0,upper extremity,BCN_0000001,female",
    "ISIC_0000004_downsampled,,,,",
    "ISIC_0024306,45.0,posterior torso,BCN_0000001,male",
]


def _isic_tree(root, gt=ISIC_GT, meta=ISIC_META):
    for i, image in enumerate(["ISIC_0000000", "ISIC_0000002", "ISIC_0000004_downsampled", "ISIC_0024306", "ISIC_0073247"]):
        _image(root / "ISIC_2019_Training_Input" / f"{image}.jpg", i)
    (root / "ISIC_2019_Training_Input" / "LICENSE.txt").write_text("CC-BY-NC\n")
    (root / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(gt) + "\n")
    if meta is not None:
        (root / "ISIC_2019_Training_Metadata.csv").write_text("\n".join(meta) + "\n")


def test_isic2019_one_hot_labels_lesion_groups_and_metadata(tmp_path, caplog):
    _isic_tree(tmp_path)
    with caplog.at_level(logging.WARNING):
        m = get_dataset("isic2019").load(tmp_path)
    assert "1 images marked UNK" in caplog.text
    assert m.classes == ("mel", "nv", "bcc", "ak", "bkl", "df", "vasc", "scc") and m.group_kind == "lesion"
    t = m.table.set_index("image_id")
    assert t["label"].to_dict() == {"ISIC_0000000": "nv", "ISIC_0000002": "mel", "ISIC_0000004_downsampled": "scc", "ISIC_0024306": "nv"}
    # one lesion's two images share a group; no lesion id: the image is its own group
    assert t["patient_id"].to_dict() == {"ISIC_0000000": "ISIC_0000000", "ISIC_0000002": "BCN_0000001",
                                         "ISIC_0000004_downsampled": "ISIC_0000004_downsampled", "ISIC_0024306": "BCN_0000001"}
    assert (t.loc["ISIC_0024306", "age"], t.loc["ISIC_0024306", "sex"], t.loc["ISIC_0024306", "site"]) == (45.0, "male", "posterior torso")
    assert pd.isna(t.loc["ISIC_0000004_downsampled", "age"]) and t.loc["ISIC_0000004_downsampled", "sex"] == ""
    assert t.loc["ISIC_0000002", "path"] == "ISIC_2019_Training_Input/ISIC_0000002.jpg"


def test_isic2019_without_metadata_groups_by_image(tmp_path):
    _isic_tree(tmp_path, meta=None)
    t = get_dataset("isic2019").load(tmp_path).table
    assert (t["patient_id"] == t["image_id"]).all() and set(t["sex"]) == {""}


def test_isic2019_bad_inputs_name_the_file(tmp_path):
    spec = get_dataset("isic2019")
    with pytest.raises(DatasetError, match="ISIC_2019_Training_GroundTruth.csv not found below the folder"):
        spec.load(tmp_path)
    _isic_tree(tmp_path, gt=[ISIC_GT[0].replace(",SCC", ""), "ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0"])
    with pytest.raises(DatasetError, match=r"ISIC_2019_Training_GroundTruth.csv: missing column\(s\) 'SCC'"):
        spec.load(tmp_path)
    _isic_tree(tmp_path, gt=[ISIC_GT[0], ISIC_GT[1], "ISIC_0000002,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"])
    with pytest.raises(DatasetError, match=r"GroundTruth.csv: row 3 \(ISIC_0000002\): expected exactly one of MEL, .* to be 1.0"):
        spec.load(tmp_path)


# -- PH2 -----------------------------------------------------------------------

PH2_HEADER = ("||   Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry | Pigment Network | "
              "Dots/Globules | Streaks | Regression Areas | Blue-Whitish Veil ||           Colors ||")
PH2_ROWS = [
    "|| IMD002 ||                        ||                  1 ||         0 |               AT |             AT |       A |                A |                 A ||                3  4 ||",
    "|| IMD003 ||                        ||                  0 ||         0 |               T |             A |       A |                A |                 A ||                4 ||",
    "|| IMD058 ||           Melanoma     ||                  2 ||         2 |               AT |             AT |       P |                P |                 P ||   3  4  5  6 ||",
]
PH2_LEGEND = [
    "",
    "Legends:",
    "Clinical Diagnosis: 0 - Common Nevus; 1 - Atypical Nevus; 2 - Melanoma.",
    "Asymmetry: 0 - Fully Symmetric; 1 - Symetric in 1 axe; 2 - Fully Asymmetric.",
]


def _ph2_tree(root, lines, cases=("IMD002", "IMD003", "IMD058")):
    base = root / "PH2Dataset"
    for i, case in enumerate(cases):
        folder = base / "PH2 Dataset images" / case
        _image(folder / f"{case}_Dermoscopic_Image" / f"{case}.bmp", 40 * i, fmt="BMP")
        _image(folder / f"{case}_lesion" / f"{case}_lesion.bmp", 255, fmt="BMP")
        (folder / f"{case}_roi").mkdir()
    base.mkdir(parents=True, exist_ok=True)
    (base / "PH2_dataset.txt").write_text("\n".join(lines) + "\n")
    return base


def test_ph2_official_layout(tmp_path):
    _ph2_tree(tmp_path, [PH2_HEADER, *PH2_ROWS, *PH2_LEGEND])
    m = get_dataset("ph2").load(tmp_path)
    assert m.classes == ("common_nevus", "atypical_nevus", "melanoma") and m.group_kind == "image"
    t = m.table.set_index("patient_id")
    assert t["label"].to_dict() == {"IMD002": "atypical_nevus", "IMD003": "common_nevus", "IMD058": "melanoma"}
    assert t.loc["IMD003", "path"] == "PH2Dataset/PH2 Dataset images/IMD003/IMD003_Dermoscopic_Image/IMD003.bmp"
    assert t.loc["IMD003", "mask"] == "PH2Dataset/PH2 Dataset images/IMD003/IMD003_lesion/IMD003_lesion.bmp"
    assert t.loc["IMD058", "histological_diagnosis"] == "Melanoma" and t.loc["IMD003", "histological_diagnosis"] == ""
    assert t.loc["IMD058", "asymmetry"] == "fully asymmetric" and t.loc["IMD003", "pigment_network"] == "typical"
    assert t.loc["IMD058", "colors"] == "light brown, dark brown, blue-gray, black"
    assert t.loc["IMD002", "dots_globules"] == "atypical" and t.loc["IMD058", "blue_whitish_veil"] == "present"


def test_ph2_table_with_x_marked_diagnosis_columns(tmp_path):
    path = tmp_path / "PH2_dataset.txt"
    path.write_text("\n".join([
        "|| Name || Histological Diagnosis || Common Nevus || Atypical Nevus || Melanoma ||",
        "|| IMD002 ||  ||  || X ||  ||",
        "|| IMD003 ||  || X ||  ||  ||",
        "|| IMD058 || Melanoma ||  ||  || X ||",
    ]) + "\n")
    assert {k: v["label"] for k, v in read_ph2_table(path).items()} == {
        "IMD002": "atypical_nevus", "IMD003": "common_nevus", "IMD058": "melanoma"}
    path.write_text("|| Name || Common Nevus || Atypical Nevus || Melanoma ||\n|| IMD002 || X || X ||  ||\n")
    with pytest.raises(DatasetError, match=r"PH2_dataset.txt: case IMD002: expected one X under Common Nevus, Atypical Nevus, Melanoma, found 2"):
        read_ph2_table(path)


def test_ph2_bad_inputs_name_the_file(tmp_path):
    spec = get_dataset("ph2")
    with pytest.raises(DatasetError, match="folder not found"):
        spec.load(tmp_path / "missing")
    with pytest.raises(DatasetError, match="PH2_dataset.txt not found below the folder"):
        spec.load(tmp_path)
    _ph2_tree(tmp_path, [PH2_HEADER.replace("Clinical Diagnosis", "Diagnosis"), *PH2_ROWS])
    with pytest.raises(DatasetError, match=r"PH2_dataset.txt: missing column 'Clinical Diagnosis'"):
        spec.load(tmp_path)
    (tmp_path / "PH2Dataset/PH2_dataset.txt").write_text("\n".join([PH2_HEADER, PH2_ROWS[0].replace("  1 ||", "  7 ||")]))
    with pytest.raises(DatasetError, match=r"PH2_dataset.txt: case IMD002: Clinical Diagnosis '7' is not 0, 1 or 2"):
        spec.load(tmp_path)
    (tmp_path / "PH2Dataset/PH2_dataset.txt").write_text("\n".join([PH2_HEADER, *PH2_ROWS, PH2_ROWS[1].replace("IMD003", "IMD999")]))
    with pytest.raises(DatasetError, match=r"1 case\(s\) listed in PH2_dataset.txt have no dermoscopic image \(first: 'PH2 Dataset images/IMD999/"):
        spec.load(tmp_path)


@pytest.mark.parametrize("name", ["ham10000", "isic2019", "ph2"])
def test_derm_specs_are_manual_and_fetch_says_where(name):
    spec = get_dataset(name)
    assert spec.task == "dermatology" and spec.access == "manual" and spec.access_note and not spec.sources
    assert spec.homepage.startswith("https://") and spec.citation and spec.licence
    with pytest.raises(DataUnavailableError, match=rf"Get it from {re.escape(spec.homepage)}.*dxlab data import {name} "):
        fetch(name)
