import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from dxlab.datasets.images import read_image, to_channels
from dxlab.datasets.manifest import Manifest
from dxlab.datasets.sources.nct_crc import CLASS_OF_CODE
from dxlab.datasets.synthetic import synthesize
from dxlab.errors import DatasetError


def test_tb_synthetic_uses_the_nlm_layout_and_is_labelled(tmp_path):
    m, path = synthesize("tb_cxr", tmp_path / "tb", n=30, seed=1, size=32)
    assert m.synthetic and m.dataset == "synthetic_nlm_tb"
    assert Manifest.load(path).digest == m.digest
    assert (tmp_path / "tb" / "DXLAB_SYNTHETIC").exists()
    assert all(p.startswith("CXR_png/") for p in m.table["path"])
    assert set(m.table["source"]) == {"shenzhen", "montgomery"}
    assert m.table["age"].notna().all() and set(m.table["sex"]) <= {"male", "female"}
    assert set(m.table["split"]) == {"train", "val", "test"}
    assert read_image(m.paths()[0]).shape == (32, 32)


def test_synthetic_is_deterministic(tmp_path):
    a, _ = synthesize("tb_cxr", tmp_path / "a", n=12, seed=5, size=24)
    b, _ = synthesize("tb_cxr", tmp_path / "b", n=12, seed=5, size=24)
    c, _ = synthesize("tb_cxr", tmp_path / "c", n=12, seed=6, size=24)
    assert a.table["sha256"].tolist() == b.table["sha256"].tolist()
    assert a.table["sha256"].tolist() != c.table["sha256"].tolist()


def test_dermatology_synthetic_groups_by_lesion(tmp_path):
    m, _ = synthesize("dermatology", tmp_path / "derm", n=40, seed=0, size=32)
    assert m.synthetic and m.task == "dermatology" and m.group_kind == "lesion"
    assert set(m.table["label"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
    assert m.table["patient_id"].nunique() < len(m), "some lesions have two images"
    assert (m.table.groupby("patient_id")["split"].nunique() == 1).all()
    assert read_image(m.paths()[0]).shape == (32, 32, 3)


def test_breast_ultrasound_synthetic_in_medmnist_format(tmp_path):
    m, _ = synthesize("cancer_breast_us", tmp_path / "us", n=30, seed=0)
    assert m.synthetic and m.task == "cancer_breast_us"
    assert set(m.table["split"]) == {"train", "val", "test"}
    assert read_image(m.paths()[0]).shape == (28, 28)


def test_histology_synthetic_uses_the_nct_crc_layout(tmp_path):
    m, _ = synthesize("cancer_histology", tmp_path / "crc", n=36, seed=0)
    assert m.synthetic and m.dataset == "synthetic_nct_crc" and m.task == "cancer_histology" and m.group_kind == "image"
    assert m.table["label"].value_counts().to_dict() == {name: 4 for name in CLASS_OF_CODE.values()}
    for path, label in zip(m.table["path"], m.table["label"]):
        match = re.fullmatch(r"NCT-CRC-HE-100K/([A-Z]+)/\1-[A-Z]{8}\.tif", path)
        assert match and CLASS_OF_CODE[match[1]] == label, path
    assert set(m.table["split"]) == {"train", "val", "test"}
    with Image.open(m.paths()[0]) as img:
        assert (img.format, img.mode, img.size) == ("TIFF", "RGB", (32, 32))


def test_histology_synthetic_looks_like_h_and_e(tmp_path):
    m, _ = synthesize("cancer_histology", tmp_path / "crc", n=27, seed=3, size=48)
    rgb = {label: np.mean([read_image(m.resolve(p)).mean((0, 1)) for p in m.table.loc[m.table["label"] == label, "path"]], 0)
           for label in m.classes}
    assert rgb["background"].std() < 0.02, "bare glass is unstained grey"
    assert rgb["adipose"].mean() > 0.85, "fat is mostly empty vacuoles"
    assert rgb["lymphocytes"].mean() < rgb["smooth_muscle"].mean() < rgb["adipose"].mean()
    assert rgb["lymphocytes"][2] > rgb["lymphocytes"][1], "haematoxylin: purple-blue nuclei"
    assert rgb["smooth_muscle"][0] > rgb["smooth_muscle"][1] + 0.2, "eosin: pink fibres"


def test_mammography_synthetic_uses_the_mini_mias_layout(tmp_path):
    m, _ = synthesize("cancer_mammography", tmp_path / "mias", n=25, seed=0)
    assert m.synthetic and m.dataset == "synthetic_mini_mias" and m.task == "cancer_mammography"
    assert list(m.table["image_id"]) == [f"mdb{i:03d}" for i in range(1, 26)]
    assert all(re.fullmatch(r"mdb\d{3}\.pgm", p) for p in m.table["path"])
    assert (tmp_path / "mias" / "Info.txt").exists()
    assert m.table["label"].value_counts().to_dict() == {"normal": 9, "benign": 8, "malignant": 8}
    # mdb001/mdb002 are one woman: one patient id, one split, one background tissue; odd is right, even left
    assert m.table["patient_id"].nunique() == 13
    assert (m.table.groupby("patient_id")[["split", "background_tissue"]].nunique() == 1).all().all()
    assert list(m.table["side"][:2]) == ["right", "left"]
    assert set(m.table["split"]) == {"train", "val", "test"}
    with Image.open(m.paths()[0]) as img:
        assert (img.format, img.mode, img.size) == ("PPM", "L", (64, 64))
    findings = {"normal": ["NORM"], "benign": ["CIRC"], "malignant": ["SPIC", "CALC", "CALC;SPIC"]}
    for row in m.table.itertuples():
        assert row.abnormalities in findings[row.label], row
        assert {lesion["severity"] for lesion in json.loads(row.lesions)} <= {row.label}


def test_mammography_lesions_lie_where_info_txt_puts_them(tmp_path):
    """Info.txt's 1024-pixel coordinates, y from the bottom, scaled to the image, hit the drawn lesion."""
    m, _ = synthesize("cancer_mammography", tmp_path / "mias", n=30, seed=1, size=128)
    checked = 0
    for row in m.table.itertuples():
        for lesion in json.loads(row.lesions):
            image = read_image(m.resolve(row.path))
            scale = image.shape[0] / 1024
            r, c = round(lesion["y_from_top"] * scale), round(lesion["x"] * scale)
            breast = np.median(image[image > 0.1])
            if lesion["class"] == "CALC":  # the brightest speck of the cluster lies within its radius
                radius = lesion["radius"] * scale
                yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
                assert image[np.hypot(yy - r, xx - c) <= radius].max() > 0.9
            else:  # a mass: its centre is brighter than the breast around it
                assert image[r, c] > breast + 0.15, (row.image_id, lesion)
            checked += 1
    assert checked >= 20


def test_synth_errors(tmp_path):
    with pytest.raises(DatasetError, match="no synthetic generator for task 'cancer_tabular'"):
        synthesize("cancer_tabular", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    with pytest.raises(DatasetError, match="not empty"):
        synthesize("tb_cxr", tmp_path / "full")
    with pytest.raises(DatasetError, match="too small"):
        synthesize("tb_cxr", tmp_path / "y", n=3)
    with pytest.raises(DatasetError, match="n=1000 is too large for the cancer_mammography layout; it names at most 999"):
        synthesize("cancer_mammography", tmp_path / "z", n=1000)
    assert not (tmp_path / "z").exists()


@pytest.mark.parametrize("task", ["cancer_histology", "cancer_mammography"])
def test_new_synthetic_sets_are_deterministic(tmp_path, task):
    a, _ = synthesize(task, tmp_path / "a", n=12, seed=5, size=24)
    b, _ = synthesize(task, tmp_path / "b", n=12, seed=5, size=24)
    c, _ = synthesize(task, tmp_path / "c", n=12, seed=6, size=24)
    assert a.digest == b.digest and a.table["sha256"].tolist() == b.table["sha256"].tolist()
    assert a.table["sha256"].tolist() != c.table["sha256"].tolist()


def _learn(manifest: Manifest, channels: int, epochs: int = 20) -> float:
    """Train a tiny CNN on the train split; AUROC on test (class 1 vs the rest, or macro one-vs-rest).

    The training rows are shuffled once (seeded): loaders list files in name
    order, which for some layouts (NCT-CRC-HE: ``<CODE>-*.tif``) is class
    order, and batches of a single class train poorly.
    """
    torch.manual_seed(0)

    def tensors(split):
        part = manifest.subset(split)
        x = np.stack([to_channels(read_image(p), channels) for p in part.paths()])
        x = torch.from_numpy(x if channels == 3 else x[..., None]).permute(0, 3, 1, 2).float()
        return x, torch.tensor(part.label_indices())

    xtr, ytr = tensors("train")
    xte, yte = tensors("test")
    n_classes = len(manifest.classes)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(16, n_classes),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.randperm(len(xtr))  # rows come in file-name order: class order in some layouts
    for _ in range(epochs):
        for i in range(0, len(xtr), 16):
            batch = order[i:i + 16]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xtr[batch]), ytr[batch]).backward()
            opt.step()
    with torch.no_grad():
        probs = model(xte).softmax(1).numpy()
    if n_classes == 2:
        return roc_auc_score(yte.numpy(), probs[:, 1])
    return roc_auc_score(yte.numpy(), probs, multi_class="ovr", labels=list(range(n_classes)))


@pytest.mark.slow
@pytest.mark.parametrize("task,n,channels", [("tb_cxr", 160, 1), ("dermatology", 210, 3), ("cancer_breast_us", 150, 1),
                                              ("cancer_histology", 270, 3), ("cancer_mammography", 180, 1)])
def test_a_small_cnn_learns_the_synthetic_data(tmp_path, task, n, channels):
    size = {"tb_cxr": 48, "dermatology": 32, "cancer_breast_us": 28, "cancer_histology": 32, "cancer_mammography": 64}[task]
    manifest, _ = synthesize(task, tmp_path / task, n=n, seed=0, size=size)
    assert _learn(manifest, channels) > 0.9
