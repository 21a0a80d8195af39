import numpy as np
import pytest
from PIL import Image

from dxlab.datasets.importers import import_csv, import_folder
from dxlab.errors import DatasetError


def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


def test_folder_per_class(tmp_path):
    for i in range(3):
        _png(tmp_path / "benign" / f"b{i}.png", i)
        _png(tmp_path / "malignant" / "nested" / f"m{i}.png", 10 + i)
    (tmp_path / "benign" / "notes.txt").write_text("ignored")
    m = import_folder(tmp_path, task="cancer_breast_us")
    assert m.classes == ("benign", "malignant")
    assert len(m) == 6 and m.group_kind == "image"
    assert "malignant/nested/m0.png" in set(m.table["path"])
    assert m.dataset == tmp_path.name


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="folder not found"):
        import_folder(tmp_path / "nope", task="tb_cxr")
    with pytest.raises(DatasetError, match="no class sub-folders"):
        import_folder(tmp_path, task="tb_cxr")
    (tmp_path / "a").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        import_folder(tmp_path, task="tb_cxr")
    with pytest.raises(DatasetError, match="unknown task 'cxr'"):
        import_folder(tmp_path, task="cxr")


def test_csv_with_patient_split_and_metadata(tmp_path):
    lines = ["file,dx,pid,fold,age"]
    for i in range(4):
        _png(tmp_path / "imgs" / f"{i}.png", i)
        lines.append(f"imgs/{i}.png,{'mel' if i % 2 else 'nevus'},P{i // 2},{'train' if i < 2 else 'Validation'},{40 + i}")
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(lines) + "\n")
    m = import_csv(csv, task="dermatology", image_col="file", label_col="dx", patient_col="pid",
                   split_col="fold", metadata_cols=["age"], classes=["nevus", "mel"])
    assert m.classes == ("nevus", "mel")
    assert m.table["patient_id"].tolist() == ["P0", "P0", "P1", "P1"]
    assert m.table["split"].tolist() == ["train", "train", "val", "val"]
    assert m.table["age"].tolist() == ["40", "41", "42", "43"]
    assert m.group_kind == "patient"


def test_csv_errors_name_file_row_and_column(tmp_path):
    _png(tmp_path / "a.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,diagnosis\na.png,x\n")
    with pytest.raises(DatasetError, match=r"labels.csv: missing column\(s\) 'label'; the file has 'path', 'diagnosis'"):
        import_csv(csv, task="dermatology")
    csv.write_text("path,label\nb.png,x\n")
    with pytest.raises(DatasetError, match=r"labels.csv: row 2: image 'b.png' \(column 'path'\) not found"):
        import_csv(csv, task="dermatology")
    csv.write_text("path,label\na.png,\n")
    with pytest.raises(DatasetError, match="row 2: empty value in label column 'label'"):
        import_csv(csv, task="dermatology")
    csv.write_text("path,label\na.png,x\n")
    with pytest.raises(DatasetError, match=r"holds \['x'\], not among the classes"):
        import_csv(csv, task="dermatology", classes=["y"])
    with pytest.raises(DatasetError, match="expected a CSV file, got a folder"):
        import_csv(tmp_path, task="dermatology")


@pytest.mark.shared_data
def test_csv_importer_on_real_ph2(shared_set):
    root = shared_set("derm_ph2")
    m = import_csv(root / "labels.csv", task="dermatology", image_col="image", label_col="label",
                   metadata_cols=["histological_diagnosis"], classes=["common_nevus", "atypical_nevus", "melanoma"])
    assert len(m) == 140
    assert m.summary()["class_counts"] == {"common_nevus": 56, "atypical_nevus": 56, "melanoma": 28}
    assert m.table["patient_id"].nunique() == 140
    first = m.table.set_index("path").loc["images/IMD304.jpg"]
    assert first["label"] == "atypical_nevus"
    import hashlib

    assert first["sha256"] == hashlib.sha256((root / "images/IMD304.jpg").read_bytes()).hexdigest()
