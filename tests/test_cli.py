import json
import subprocess
import sys

import pytest

from dxlab.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("dxlab ")
    for argv in (["--help"], ["data", "--help"], ["data", "import", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "usage: dxlab" in capsys.readouterr().out


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "dxlab", "data", "list", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)


def test_data_list_json_has_task_classes_licence(capsys):
    code, out, _ = run(capsys, "data", "list", "--json")
    sets = json.loads(out)
    assert code == 0 and len(sets) >= 14
    for s in sets:
        assert s["task"] and s["classes"] and s["licence"] and s["citation"], s["name"]
    code, out, _ = run(capsys, "data", "list", "--task", "tb_cxr", "--json")
    assert {s["task"] for s in json.loads(out)} == {"tb_cxr"}


def test_data_info_and_unknown_name(capsys):
    code, out, _ = run(capsys, "data", "info", "nlm_tb", "--json")
    assert code == 0 and json.loads(out)["classes"] == ["normal", "tb"]
    code, out, err = run(capsys, "data", "info", "nope")
    assert code == 2 and "unknown data set 'nope'; known data sets:" in err and "nlm_tb" in err
    assert "Traceback" not in err


def test_fetch_of_a_manual_set_says_where_and_what_to_run(capsys):
    code, _, err = run(capsys, "data", "fetch", "nlm_shenzhen")
    assert code == 2
    assert "lhncbc.nlm.nih.gov" in err and "dxlab data import nlm_shenzhen" in err


def test_synth_split_summary_round_trip(capsys, tmp_path):
    code, out, _ = run(capsys, "data", "synth", "tb_cxr", "--n", "20", "--out", str(tmp_path / "s"), "--size", "24", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["synthetic"] and summary["examples"] == 20
    code, out, _ = run(capsys, "data", "split", summary["manifest"], "--out", str(tmp_path / "resplit.csv"),
                       "--seed", "3", "--ignore-official", "--json")
    resplit = json.loads(out)
    assert code == 0 and resplit["examples"] == 20 and resplit["version"] != summary["version"]
    code, out, _ = run(capsys, "data", "summary", str(tmp_path / "resplit.csv"))
    assert code == 0 and "[SYNTHETIC]" in out and "train" in out


def test_import_folder_and_csv(capsys, tmp_path):
    import numpy as np
    from PIL import Image

    for cls in ("a", "b"):
        for i in range(4):
            (tmp_path / "data" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4), i, np.uint8)).save(tmp_path / "data" / cls / f"{i}.png")
    code, out, err = run(capsys, "data", "import", "folder", str(tmp_path / "data"), "--out", str(tmp_path / "m.csv"))
    assert code == 2 and "needs --task" in err
    code, out, _ = run(capsys, "data", "import", "folder", str(tmp_path / "data"), "--task", "dermatology",
                       "--out", str(tmp_path / "m.csv"), "--split", "--json")
    assert code == 0 and json.loads(out)["splits"] == {"train": 4, "val": 2, "test": 2}
    (tmp_path / "labels.csv").write_text("img,dx\ndata/a/0.png,x\n")
    code, _, err = run(capsys, "data", "import", "csv", str(tmp_path / "labels.csv"), "--task", "dermatology",
                       "--image-col", "img", "--out", str(tmp_path / "c.csv"))
    assert code == 2 and "labels.csv: missing column(s) 'label'" in err
    assert not (tmp_path / "c.csv").exists(), "a failed import writes nothing"


@pytest.mark.shared_data
def test_import_real_nlm_and_ph2(capsys, tmp_path, shared_set):
    code, out, _ = run(capsys, "data", "import", "nlm_tb", str(shared_set("tb_shenzhen_montgomery_128")),
                       "--out", str(tmp_path / "tb.csv"), "--split", "--json")
    s = json.loads(out)
    assert code == 0 and s["examples"] == 402 and s["class_counts"] == {"normal": 205, "tb": 197}
    assert set(s["splits"]) == {"train", "val", "test"}
    code, out, _ = run(capsys, "data", "import", "csv", str(shared_set("derm_ph2") / "labels.csv"), "--task", "dermatology",
                       "--image-col", "image", "--meta-col", "histological_diagnosis", "--dataset", "ph2",
                       "--classes", "common_nevus,atypical_nevus,melanoma", "--out", str(tmp_path / "ph2.csv"), "--json")
    s = json.loads(out)
    assert code == 0 and s["dataset"] == "ph2" and s["class_counts"]["melanoma"] == 28


def test_demo_builds_the_synthetic_sets(capsys, tmp_path, monkeypatch):
    import dxlab.cli.demo as demo

    monkeypatch.setattr(demo, "DEMO_SETS", (("tb_cxr", 20), ("dermatology", 21), ("cancer_breast_us", 15)))
    code, out, _ = run(capsys, "demo", "--out", str(tmp_path / "demo"))
    assert code == 0 and "SYNTHETIC" in out and "synthetic_nlm_tb" in out
    code, out, _ = run(capsys, "demo", "--out", str(tmp_path / "demo"), "--json")
    assert code == 0 and len(json.loads(out)) == 3, "a second run replaces the first"
    (tmp_path / "mine" / "tb_cxr").mkdir(parents=True)
    code, _, err = run(capsys, "demo", "--out", str(tmp_path / "mine"))
    assert code == 2 and "was not written by 'dxlab demo'" in err
