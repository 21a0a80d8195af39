"""TBX11K and TB Chest X-ray Database loaders, on trees written in their official layouts."""

import json
import logging
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dxlab.datasets import get_dataset
from dxlab.datasets.download import fetch
from dxlab.datasets.manifest import Manifest, sha256_file
from dxlab.datasets.sources import tb_cxr_db
from dxlab.errors import DatasetError, DataUnavailableError


def _png(path, size=(8, 8), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)


def _voc(path, size, objects):
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, (x0, y0, x1, y1) in objects
    )
    path.write_text(f"<annotation><filename>{path.stem}.png</filename><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>")


def _tbx11k_tree(root):
    """A tiny TBX11K in the official layout, under root/TBX11K."""
    base = root / "TBX11K"
    for i, rel in enumerate(["health/h0001.png", "health/h0002.png", "sick/s0001.png", "tb/tb1199.png",
                             "test/0001.png", "extra/da/tb/da_tb_01.png"]):
        _png(base / "imgs" / rel, value=i)
    _png(base / "imgs/tb/tb0003.png", size=(40, 40), value=50)
    _png(base / "imgs/tb/tb0004.png", size=(32, 32), value=60)
    lists = base / "lists"
    lists.mkdir(parents=True)
    (lists / "TBX11K_train.txt").write_text("health/h0001.png\nsick/s0001.png\ntb/tb0003.png\ntb/tb1199.png\n")
    (lists / "TBX11K_val.txt").write_text("health/h0002.png\ntb/tb0004.png\n")
    (lists / "all_test.txt").write_text("test/0001.png\n")
    (lists / "all_train.txt").write_text("extra/da/tb/da_tb_01.png\n")
    # XML boxes are in the original radiograph's pixels (here 2000x1000): scaled onto the 40x40 image
    _voc(base / "annotations/xml/tb0003.xml", (2000, 1000), [
        ("ActiveTuberculosis", (200, 100, 600, 400)),
        ("ObsoletePulmonaryTuberculosis", (1000, 500, 1500, 900)),
    ])
    # COCO boxes ([x, y, w, h] on 512x512) for an image without XML: scaled onto the 32x32 image
    coco = {
        "categories": [{"id": 1, "name": "ActiveTuberculosis"}, {"id": 2, "name": "ObsoletePulmonaryTuberculosis"}],
        "images": [{"id": 7, "file_name": "tb/tb0004.png", "width": 512, "height": 512}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [256, 128, 64, 32]}],
    }
    (base / "annotations/json").mkdir(parents=True)
    (base / "annotations/json/TBX11K_val.json").write_text(json.dumps(coco))
    return base


def test_tbx11k_official_lists_labels_and_boxes(tmp_path, caplog):
    _tbx11k_tree(tmp_path)
    with caplog.at_level(logging.INFO):
        m = get_dataset("tbx11k").load(tmp_path)
    t = m.table.set_index("patient_id")
    assert m.classes == ("healthy", "sick_but_non_tb", "tb") and m.group_kind == "image"
    # the unlabelled test image and the extra sets are not loaded
    assert sorted(t.index) == ["h0001", "h0002", "s0001", "tb0003", "tb0004", "tb1199"]
    assert t["split"].to_dict() == {"h0001": "train", "s0001": "train", "tb0003": "train", "tb1199": "train",
                                    "h0002": "val", "tb0004": "val"}
    assert t["label"].to_dict() == {"h0001": "healthy", "s0001": "sick_but_non_tb", "tb0003": "tb", "tb1199": "tb",
                                    "h0002": "healthy", "tb0004": "tb"}
    assert t.loc["tb0003", "path"] == "TBX11K/imgs/tb/tb0003.png"
    assert json.loads(t.loc["tb0003", "boxes"]) == [
        {"category": "ActiveTuberculosis", "box": [4.0, 4.0, 12.0, 16.0]},
        {"category": "ObsoletePulmonaryTuberculosis", "box": [20.0, 20.0, 30.0, 36.0]},
    ]
    assert t.loc["tb0003", "tb_type"] == "active+latent"
    assert json.loads(t.loc["tb0004", "boxes"]) == [{"category": "ActiveTuberculosis", "box": [16.0, 8.0, 20.0, 10.0]}]
    assert t.loc["tb0004", "tb_type"] == "active"
    assert t.loc["tb1199", "boxes"] == "[]" and t.loc["tb1199", "tb_type"] == ""
    assert t.loc["h0001", "boxes"] == "[]"
    assert "tb1199" in caplog.text
    assert t.loc["tb0003", "sha256"] == sha256_file(tmp_path / "TBX11K/imgs/tb/tb0003.png")
    # the boxes survive the manifest file's round trip
    again = Manifest.load(m.save(tmp_path / "tbx11k.manifest.csv"))
    assert again.digest == m.digest
    assert json.loads(again.table.set_index("patient_id").loc["tb0004", "boxes"])[0]["box"] == [16.0, 8.0, 20.0, 10.0]


def test_tbx11k_bad_inputs_name_the_file(tmp_path):
    spec = get_dataset("tbx11k")
    with pytest.raises(DatasetError, match="folder not found"):
        spec.load(tmp_path / "missing")
    with pytest.raises(DatasetError, match=r"lists/TBX11K_train.txt not found"):
        spec.load(tmp_path)
    base = _tbx11k_tree(tmp_path)
    val = base / "lists/TBX11K_val.txt"
    val.write_text("health/h0002.png\ntb/tb9999.png\n")
    with pytest.raises(DatasetError, match=r"TBX11K_val.txt: image 'tb/tb9999.png' listed in TBX11K_val.txt is missing"):
        spec.load(tmp_path)
    val.write_text("test/0001.png\n")
    with pytest.raises(DatasetError, match=r"TBX11K_val.txt: 'test/0001.png' is not in one of the labelled folders"):
        spec.load(tmp_path)
    val.write_text("health/h0001.png\n")
    with pytest.raises(DatasetError, match="listed in both TBX11K_train.txt and TBX11K_val.txt"):
        spec.load(tmp_path)
    val.write_text("health/h0002.png\n")
    (base / "annotations/xml/tb0003.xml").write_text("<annotation><object>")
    with pytest.raises(DatasetError, match=r"tb0003.xml: malformed XML annotation"):
        spec.load(tmp_path)
    (base / "lists/TBX11K_val.txt").unlink()
    with pytest.raises(DatasetError, match=r"TBX11K_val.txt: official image list not found"):
        spec.load(tmp_path)


@pytest.mark.shared_data
def test_tbx11k_real_coco_annotations(shared_set, tmp_path):
    """Real TBX11K images and the real COCO file (a 3-image subset of TBX11K_train.json)."""
    misc = shared_set("cxr_misc")
    base = tmp_path / "TBX11K"
    for src, rel in [("normal/tbx11k_h0001.png", "health/h0001.png"), ("tb/tbx11k_tb0005.png", "tb/tb0005.png"),
                     ("tb/tbx11k_tb0007.png", "tb/tb0007.png")]:
        (base / "imgs" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(misc / src, base / "imgs" / rel)
    (base / "lists").mkdir()
    (base / "lists/TBX11K_train.txt").write_text("health/h0001.png\ntb/tb0005.png\ntb/tb0007.png\n")
    (base / "lists/TBX11K_val.txt").write_text("")
    (base / "annotations/json").mkdir(parents=True)
    shutil.copyfile(misc / "tbx11k_TBX11K_train_subset.json", base / "annotations/json/TBX11K_train.json")
    t = get_dataset("tbx11k").load(tmp_path).table.set_index("patient_id")
    assert t["label"].to_dict() == {"h0001": "healthy", "tb0005": "tb", "tb0007": "tb"}
    assert set(t["split"]) == {"train"}
    assert json.loads(t.loc["tb0005", "boxes"]) == [{"category": "ActiveTuberculosis", "box": [381.83, 126.87, 422.07, 171.44]}]
    assert t.loc["tb0005", "tb_type"] == "active"
    assert [b["category"] for b in json.loads(t.loc["tb0007", "boxes"])] == ["ObsoletePulmonaryTuberculosis"] * 2
    assert t.loc["tb0007", "tb_type"] == "latent" and t.loc["h0001", "boxes"] == "[]"


@pytest.mark.shared_data
def test_tbx11k_real_boxes_through_voc_xml(shared_set, tmp_path):
    """The 120 real TB images with their real boxes written as VOC XML in original-radiograph pixels."""
    src = shared_set("tbx11k_tb_boxes_512")
    labels = pd.read_csv(src / "labels.csv")
    boxes = pd.read_csv(src / "boxes_512.csv")
    base = tmp_path / "TBX11K"
    (base / "imgs/tb").mkdir(parents=True)
    (base / "lists").mkdir()
    for image in labels["image"]:
        (base / "imgs/tb" / image.split("/")[-1]).symlink_to(src / image)
    for image, group in boxes.groupby("image"):
        w, h = int(group["orig_width"].iloc[0]), int(group["orig_height"].iloc[0])
        objs = [(r.category, (r.xmin_512 * w / 512, r.ymin_512 * h / 512, r.xmax_512 * w / 512, r.ymax_512 * h / 512))
                for r in group.itertuples()]
        _voc(base / "annotations/xml" / image.split("/")[-1].replace(".png", ".xml"), (w, h), objs)
    split_lists = {"train": [], "val": []}
    for r in labels.itertuples():
        split_lists[r.tbx11k_official_split].append("tb/" + r.image.split("/")[-1])
    (base / "lists/TBX11K_train.txt").write_text("".join(f"{e}\n" for e in split_lists["train"]))
    (base / "lists/TBX11K_val.txt").write_text("".join(f"{e}\n" for e in split_lists["val"]))

    m = get_dataset("tbx11k").load(tmp_path)
    assert len(m) == 120 and set(m.table["label"]) == {"tb"} and set(m.table["split"]) == {"val"}
    t = m.table.set_index("patient_id")
    for r in labels.itertuples():
        stem = r.image.split("/")[-1][:-4]
        got = json.loads(t.loc[stem, "boxes"])
        assert len(got) == r.n_boxes
        assert {b["category"] for b in got} == set(r.tb_lesion_categories.split("|"))
    want = boxes[boxes["image"] == "images/tb0003.png"][["xmin_512", "ymin_512", "xmax_512", "ymax_512"]].to_numpy()
    got = np.array([b["box"] for b in json.loads(t.loc["tb0003", "boxes"])])
    np.testing.assert_allclose(got, want, atol=0.011)


# -- TB Chest X-ray Database ----------------------------------------------------

def _rahman_tree(root):
    base = root / "TB_Chest_Radiography_Database"
    _png(base / "Normal/Normal-1.png", value=1)
    _png(base / "Normal/Normal-2.png", value=2)
    _png(base / "Tuberculosis/Tuberculosis-1.png", value=3)
    (base / "README.md.txt").write_text("TB Chest X-ray Database\n")
    return base


def test_tb_cxr_db_names_give_labels_each_image_its_own_group(tmp_path, monkeypatch, caplog):
    base = _rahman_tree(tmp_path)
    (base / "Normal.metadata.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    monkeypatch.setattr(tb_cxr_db, "openpyxl_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="dxlab.datasets.sources.tb_cxr_db"):
        m = get_dataset("tb_cxr_db").load(tmp_path)
    assert "openpyxl is not installed: skipping" in caplog.text and "pip install openpyxl" in caplog.text
    t = m.table.set_index("patient_id")
    assert t["label"].to_dict() == {"Normal-1": "normal", "Normal-2": "normal", "Tuberculosis-1": "tb"}
    assert t.loc["Tuberculosis-1", "path"] == "TB_Chest_Radiography_Database/Tuberculosis/Tuberculosis-1.png"
    assert m.group_kind == "image" and set(t["split"]) == {""} and set(t["source_url"]) == {""}
    assert "no patient ids" in get_dataset("tb_cxr_db").description.lower()


def test_tb_cxr_db_metadata_sheets_give_source_urls(tmp_path, monkeypatch):
    base = _rahman_tree(tmp_path)
    sheets = {
        "Normal.metadata.xlsx": pd.DataFrame({"FILE NAME": ["Normal-1", "Normal-2"], "FORMAT": ["PNG", "PNG"],
                                              "SIZE": ["512*512", "512*512"], "URL": ["https://example.org/rsna", None]}),
        "Tuberculosis.metadata.xlsx": pd.DataFrame({"FILE NAME": ["Tuberculosis-1"], "FORMAT": ["PNG"],
                                                    "SIZE": ["512*512"], "URL": ["https://example.org/niaid"]}),
    }
    for name in sheets:
        (base / name).write_bytes(b"xlsx")
    monkeypatch.setattr(tb_cxr_db, "openpyxl_available", lambda: True)
    monkeypatch.setattr(tb_cxr_db.pd, "read_excel", lambda path, **kw: sheets[path.name])
    t = get_dataset("tb_cxr_db").load(tmp_path).table.set_index("patient_id")
    assert t["source_url"].to_dict() == {"Normal-1": "https://example.org/rsna", "Normal-2": "",
                                         "Tuberculosis-1": "https://example.org/niaid"}
    sheets["Normal.metadata.xlsx"] = pd.DataFrame({"FILE NAME": ["Normal-1"], "FORMAT": ["PNG"]})
    with pytest.raises(DatasetError, match=r"Normal.metadata.xlsx: missing column\(s\) 'URL'; the sheet has 'FILE NAME', 'FORMAT'"):
        get_dataset("tb_cxr_db").load(tmp_path)


def test_tb_cxr_db_errors(tmp_path):
    spec = get_dataset("tb_cxr_db")
    with pytest.raises(DatasetError, match="folder not found"):
        spec.load(tmp_path / "missing")
    _png(tmp_path / "TB_Chest_Radiography_Database/Normal/Normal (1).png")  # the old v1 naming is not this layout
    with pytest.raises(DatasetError, match="no TB Chest X-ray Database images found"):
        spec.load(tmp_path)


@pytest.mark.shared_data
def test_tb_cxr_db_on_real_images(shared_set, tmp_path):
    misc = shared_set("cxr_misc")
    base = tmp_path / "TB_Chest_Radiography_Database"
    copies = {"normal/rahman_Normal-101.png": "Normal/Normal-101.png", "normal/rahman_Normal-1016.png": "Normal/Normal-1016.png",
              "tb/rahman_Tuberculosis-1038.png": "Tuberculosis/Tuberculosis-1038.png",
              "tb/rahman_Tuberculosis-1048.png": "Tuberculosis/Tuberculosis-1048.png"}
    for src, dst in copies.items():
        (base / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(misc / src, base / dst)
    t = get_dataset("tb_cxr_db").load(tmp_path).table.set_index("patient_id")
    assert t["label"].to_dict() == {"Normal-101": "normal", "Normal-1016": "normal",
                                    "Tuberculosis-1038": "tb", "Tuberculosis-1048": "tb"}
    assert t.loc["Tuberculosis-1038", "sha256"] == sha256_file(misc / "tb/rahman_Tuberculosis-1038.png")


@pytest.mark.parametrize("name", ["tbx11k", "tb_cxr_db"])
def test_tb_specs_are_manual_and_fetch_says_where(name):
    spec = get_dataset(name)
    assert spec.task == "tb_cxr" and spec.access == "manual" and spec.access_note and not spec.sources
    assert spec.homepage.startswith("https://") and spec.citation and spec.licence
    with pytest.raises(DataUnavailableError, match=rf"Get it from {re.escape(spec.homepage)}.*dxlab data import {name} "):
        fetch(name)
