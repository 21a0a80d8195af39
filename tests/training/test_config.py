from pathlib import Path

import pytest

from dxlab.errors import ConfigError
from dxlab.training.config import load_config, valid_keys

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALL = sorted(CONFIGS.glob("*.yaml"))


def test_every_task_ships_a_config_and_a_tiny_variant():
    names = {p.stem for p in ALL}
    for task in ("tb_cxr", "dermatology", "derm_melanoma", "cancer_breast_us", "cancer_histology",
                 "cancer_mammography", "cancer_tabular"):
        assert task in names and f"{task}-tiny" in names, task


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.registry.model_name.startswith("dxlab-")
    if path.stem.endswith("-tiny"):
        assert cfg.task == "cancer_tabular" or cfg.data.synthetic is not None, "tiny configs run on synthetic data"


def test_overrides_and_freezing():
    cfg = load_config(CONFIGS / "tb_cxr.yaml", ["train.epochs=3", "model.args.pretrained=true", "eval.subgroups=[sex]"])
    assert cfg.train.epochs == 3 and cfg.model.args["pretrained"] is True and cfg.eval.subgroups == ("sex",)
    with pytest.raises(Exception):
        cfg.train.epochs = 5  # frozen
    flat = cfg.flat()
    assert flat["train.epochs"] == 3 and flat["registry.gate.min_sensitivity"] == 0.9
    assert load_config(CONFIGS / "tb_cxr.yaml").to_yaml() != cfg.to_yaml()


def test_unknown_keys_are_refused_with_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'; valid keys: .*train.epochs"):
        load_config(CONFIGS / "tb_cxr.yaml", ["train.epoch=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "tb_cxr-tiny.yaml").read_text() + "\ntrainer: {epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid config:\n  trainer: unknown key; valid keys here: "):
        load_config(bad)
    nested = tmp_path / "nested.yaml"
    nested.write_text((CONFIGS / "tb_cxr-tiny.yaml").read_text().replace("batch_size: 16", "batch: 16"))
    with pytest.raises(ConfigError, match=r"train.batch: unknown key; valid keys here: .*train.batch_size"):
        load_config(nested)
    # inside a list of sections: the item's keys (a YAML flow mapping needs "key: value", with the space)
    with pytest.raises(ConfigError, match=r"data.sources.0.manifest:x.csv: unknown key; valid keys here: "
                                          r"data.sources.0.dataset, data.sources.0.root, data.sources.0.manifest"):
        load_config(CONFIGS / "tb_cxr.yaml", ["data.sources=[{manifest:x.csv}]"])


@pytest.mark.parametrize("override,message", [
    ("train.epochs=0", "train.epochs: Input should be greater than or equal to 1"),
    ("image.channels=2", "image.channels"),
    ("task=cardiology", "unknown task 'cardiology'"),
    ("optimizer.name=rmsprop", "optimizer.name"),
    ("train.epochs", "is not KEY=VALUE"),
])
def test_bad_values_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "tb_cxr-tiny.yaml", [override])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_valid_keys_cover_sections():
    keys = valid_keys()
    assert "train.early_stopping.patience" in keys and "registry.gate.min_specificity" in keys
