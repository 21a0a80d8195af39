import io

import numpy as np
import pytest
from PIL import Image

from dxlab.datasets.images import read_image, to_channels
from dxlab.errors import DatasetError


def _encode(arr: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "PPM"])
def test_grey_8bit_is_scaled_by_255(fmt):
    arr = np.array([[0, 51], [204, 255]], np.uint8)
    out = read_image(_encode(arr, fmt))
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-6)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "PPM"])
def test_grey_16bit_is_scaled_by_65535(fmt):
    arr = np.array([[0, 1000], [40000, 65535]], np.uint16)
    out = read_image(_encode(arr, fmt))
    np.testing.assert_allclose(out, arr / 65535.0, atol=1e-6)


def test_rgb_png_and_jpeg():
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[..., 0] = 255
    png = read_image(_encode(arr, "PNG"))
    assert png.shape == (8, 8, 3)
    np.testing.assert_allclose(png[..., 0], 1.0)
    jpg = read_image(_encode(arr, "JPEG"))
    assert jpg.shape == (8, 8, 3) and jpg[..., 0].mean() > 0.9 and jpg[..., 2].mean() < 0.1


def test_alpha_is_dropped_and_palette_becomes_rgb():
    rgba = np.full((4, 4, 4), 128, np.uint8)
    assert read_image(_encode(rgba, "PNG")).shape == (4, 4, 3)
    la = Image.new("LA", (4, 4), (100, 255))
    buf = io.BytesIO()
    la.save(buf, format="PNG")
    grey = read_image(buf.getvalue())
    assert grey.shape == (4, 4) and np.allclose(grey, 100 / 255)
    pal = Image.new("P", (4, 4), 3)
    pal.putpalette([0, 0, 0] * 3 + [255, 0, 0] + [0, 0, 0] * 252)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert np.allclose(read_image(buf.getvalue())[0, 0], [1.0, 0.0, 0.0])


def test_pgm_file_on_disk(tmp_path):
    path = tmp_path / "x.pgm"
    Image.fromarray(np.full((3, 5), 255, np.uint8)).save(path)
    assert read_image(path).shape == (3, 5)


def test_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty\.png: empty file"):
        read_image(empty)
    with pytest.raises(DatasetError, match="missing.png: image file not found"):
        read_image(tmp_path / "missing.png")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all")
    with pytest.raises(DatasetError, match="garbage.png: not a readable image"):
        read_image(garbage)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(_encode(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8), "PNG")[:200])
    with pytest.raises(DatasetError, match="truncated.png: corrupt or truncated"):
        read_image(truncated)
    gif = io.BytesIO()
    Image.new("L", (4, 4)).save(gif, format="GIF")
    with pytest.raises(DatasetError, match="unsupported image format 'GIF'"):
        read_image(gif.getvalue(), name="upload.gif")


def test_decompression_bomb_is_refused(monkeypatch):
    import dxlab.datasets.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(DatasetError, match="exceeds the limit"):
        read_image(_encode(np.zeros((20, 20), np.uint8), "PNG"), name="big.png")


def test_to_channels():
    grey = np.full((2, 2), 0.5, np.float32)
    assert to_channels(grey, 3).shape == (2, 2, 3)
    rgb = np.zeros((2, 2, 3), np.float32)
    rgb[..., 1] = 1.0
    np.testing.assert_allclose(to_channels(rgb, 1), 0.587, atol=1e-6)
    with pytest.raises(ValueError):
        to_channels(grey, 2)
