import pandas as pd
import pytest

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.errors import DatasetError


def _tree(tmp_path, n=6):
    rows = []
    for i in range(n):
        f = tmp_path / f"img{i}.png"
        f.write_bytes(f"pixels {i}".encode())
        rows.append({"path": f.name, "label": "tb" if i % 2 else "normal", "patient_id": f"p{i // 2}", "age": 30 + i, "sex": "female"})
    return rows


def _manifest(tmp_path, rows):
    return build_manifest(rows, dataset="toy", task="tb_cxr", classes=("normal", "tb"), root=tmp_path)


def test_build_fills_sha256_and_split(tmp_path):
    m = _manifest(tmp_path, _tree(tmp_path))
    assert list(m.table.columns[:5]) == ["path", "label", "patient_id", "split", "sha256"]
    import hashlib

    assert m.table.loc[0, "sha256"] == hashlib.sha256(b"pixels 0").hexdigest()
    assert set(m.table["split"]) == {""}
    assert m.metadata_columns == ["age", "sex"]
    assert m.resolve("img0.png") == tmp_path.resolve() / "img0.png"
    assert m.label_indices()[:2] == [0, 1]
    assert not m.synthetic and m.digest.startswith("sha256:")


def test_save_load_round_trip_keeps_digest_and_types(tmp_path):
    m = _manifest(tmp_path, _tree(tmp_path))
    path = m.save(tmp_path / "out" / "m.csv")
    assert path.read_text().startswith("# format: dxlab-manifest/1\n")
    loaded = Manifest.load(path)
    assert loaded.digest == m.digest
    assert loaded.classes == ("normal", "tb") and loaded.root == tmp_path.resolve()
    assert loaded.table["age"].tolist() == [30, 31, 32, 33, 34, 35]


def test_digest_changes_when_a_label_or_a_file_changes(tmp_path):
    rows = _tree(tmp_path)
    base = _manifest(tmp_path, rows).digest
    relabelled = [dict(r) for r in rows]
    relabelled[0]["label"] = "tb"
    assert _manifest(tmp_path, relabelled).digest != base
    (tmp_path / "img3.png").write_bytes(b"changed pixels")
    assert _manifest(tmp_path, rows).digest != base
    (tmp_path / "img3.png").write_bytes(b"pixels 3")
    assert _manifest(tmp_path, list(reversed(rows))).digest == base, "row order must not change the version"


def test_hand_edited_manifest_is_refused(tmp_path):
    path = _manifest(tmp_path, _tree(tmp_path)).save(tmp_path / "m.csv")
    text = path.read_text().replace("img0.png,normal", "img0.png,tb")
    path.write_text(text)
    with pytest.raises(DatasetError, match="m.csv: content digest .* does not match"):
        Manifest.load(path)


def test_bad_tables_are_refused(tmp_path):
    rows = _tree(tmp_path)
    with pytest.raises(DatasetError, match=r"label\(s\) \['cancer'\] are not among the classes"):
        _manifest(tmp_path, [{**rows[0], "label": "cancer"}])
    with pytest.raises(DatasetError, match="listed file 'nope.png' is missing"):
        _manifest(tmp_path, [{**rows[0], "path": "nope.png"}])
    with pytest.raises(DatasetError, match="has no patient/group id"):
        _manifest(tmp_path, [{**rows[0], "patient_id": ""}])
    with pytest.raises(DatasetError, match="listed more than once"):
        _manifest(tmp_path, [rows[0], rows[0]])
    with pytest.raises(DatasetError, match="lacks required column"):
        Manifest(table=pd.DataFrame({"path": ["a"]}), dataset="x", task="tb_cxr", classes=("a",))
    with pytest.raises(DatasetError, match="split value"):
        Manifest(table=pd.DataFrame({"path": ["a"], "label": ["a"], "patient_id": ["p"], "split": ["training"], "sha256": [""]}),
                 dataset="x", task="tb_cxr", classes=("a",))


def test_load_errors(tmp_path):
    with pytest.raises(DatasetError, match="manifest file not found"):
        Manifest.load(tmp_path / "none.csv")
    other = tmp_path / "other.csv"
    other.write_text("path,label\na,b\n")
    with pytest.raises(DatasetError, match="other.csv: not a dxlab manifest"):
        Manifest.load(other)
