"""The evaluation plots write non-empty PNG files and leave matplotlib's global state alone."""

from __future__ import annotations

import numpy as np
import pytest

from dxlab.errors import EvaluationError
from dxlab.training import plots
from dxlab.training.operating_point import choose_operating_point

PNG = b"\x89PNG\r\n\x1a\n"


def _binary(n=200):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)


def _assert_png(path, expected):
    assert path == expected and path.is_file()
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000


def test_binary_plots(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    y, p = _binary()
    op = choose_operating_point(y, p, "sensitivity>=0.9")
    _assert_png(plots.plot_roc(y, p, tmp_path / "roc.png", operating_point=op, class_names=["normal", "tb"]),
                tmp_path / "roc.png")
    _assert_png(plots.plot_precision_recall(y, p, tmp_path / "pr.png", operating_point=0.5), tmp_path / "pr.png")
    _assert_png(plots.plot_reliability(y, p, tmp_path / "sub" / "reliability.png", n_bins=10),
                tmp_path / "sub" / "reliability.png")
    _assert_png(plots.plot_confusion_matrix(y, (p >= op.threshold).astype(int), str(tmp_path / "cm.png"),
                                            class_names=["normal", "tb"]), tmp_path / "cm.png")
    assert matplotlib.get_backend() == backend


def test_multiclass_plots(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 150)
    z = rng.normal(size=(150, 3))
    z[np.arange(150), y] += 1
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    names = ["melanoma", "nevus", "other"]
    _assert_png(plots.plot_roc(y, p, tmp_path / "roc.png", class_names=names), tmp_path / "roc.png")
    _assert_png(plots.plot_precision_recall(y, p, tmp_path / "pr.png", class_names=names), tmp_path / "pr.png")
    _assert_png(plots.plot_confusion_matrix(y, p.argmax(axis=1), tmp_path / "cm.png", class_names=names),
                tmp_path / "cm.png")


def test_plot_errors(tmp_path):
    y, p = _binary()
    with pytest.raises(EvaluationError, match="ending in .png"):
        plots.plot_roc(y, p, tmp_path / "roc.pdf")
    with pytest.raises(EvaluationError, match="binary task"):
        plots.plot_roc([0, 1, 2], np.eye(3), tmp_path / "roc.png", operating_point=0.5)
    with pytest.raises(EvaluationError, match="class index 1, outside the valid range 0..0"):
        plots.plot_confusion_matrix([0, 1], [0, 1], tmp_path / "cm.png", class_names=["a"])
