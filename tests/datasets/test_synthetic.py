import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from dxlab.datasets.images import read_image, to_channels
from dxlab.datasets.manifest import Manifest
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


def test_synth_errors(tmp_path):
    with pytest.raises(DatasetError, match="no synthetic generator for task 'cancer_tabular'"):
        synthesize("cancer_tabular", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    with pytest.raises(DatasetError, match="not empty"):
        synthesize("tb_cxr", tmp_path / "full")
    with pytest.raises(DatasetError, match="too small"):
        synthesize("tb_cxr", tmp_path / "y", n=3)


def _learn(manifest: Manifest, channels: int, epochs: int = 20) -> float:
    """Train a tiny CNN on the train split; AUROC of class 1 vs the rest on test."""
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
    for _ in range(epochs):
        for i in range(0, len(xtr), 16):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xtr[i:i + 16]), ytr[i:i + 16]).backward()
            opt.step()
    with torch.no_grad():
        probs = model(xte).softmax(1).numpy()
    if n_classes == 2:
        return roc_auc_score(yte.numpy(), probs[:, 1])
    return roc_auc_score(yte.numpy(), probs, multi_class="ovr", labels=list(range(n_classes)))


@pytest.mark.slow
@pytest.mark.parametrize("task,n,channels", [("tb_cxr", 160, 1), ("dermatology", 210, 3), ("cancer_breast_us", 150, 1)])
def test_a_small_cnn_learns_the_synthetic_data(tmp_path, task, n, channels):
    size = {"tb_cxr": 48, "dermatology": 32, "cancer_breast_us": 28}[task]
    manifest, _ = synthesize(task, tmp_path / task, n=n, seed=0, size=size)
    assert _learn(manifest, channels) > 0.9
