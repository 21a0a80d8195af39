"""Preprocessing: the spec round-trips through JSON; the function is exact and deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dxlab.datasets.synthetic import draw_cxr, draw_skin_lesion
from dxlab.errors import ModelError
from dxlab.models.preprocessing import IMAGENET_MEAN, PreprocessSpec, preprocess, preprocess_batch


def _cxr(size: int = 96) -> np.ndarray:
    return np.clip(draw_cxr(np.random.default_rng(0), size, tb=True), 0, 1).astype(np.float32)


def _skin(size: int = 80) -> np.ndarray:
    return draw_skin_lesion(np.random.default_rng(0), size, "mel").astype(np.float32)


def test_spec_round_trips_through_json():
    spec = PreprocessSpec((64, 48), 3, IMAGENET_MEAN, (0.2, 0.3, 0.4), "pad", 0.25)
    data = json.loads(json.dumps(spec.to_dict()))
    assert data == {"image_size": [64, 48], "channels": 3, "mean": list(IMAGENET_MEAN), "std": [0.2, 0.3, 0.4],
                    "resize": "pad", "pad_value": 0.25}
    again = PreprocessSpec.from_dict(data)
    assert again == spec and hash(again) == hash(spec)
    assert again.input_shape == (3, 64, 48)


def test_spec_normalises_its_fields():
    spec = PreprocessSpec(28, np.int64(1), 0.5, [0.25])
    assert spec.image_size == (28, 28) and spec.mean == (0.5,) and spec.std == (0.25,)
    assert type(spec.channels) is int
    json.dumps(spec.to_dict())
    with pytest.raises(Exception):  # frozen
        spec.channels = 3
    grey = PreprocessSpec.imagenet(224, channels=1)
    assert grey.mean == pytest.approx((sum(IMAGENET_MEAN) / 3,))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"image_size": 0}, "image_size=0"),
    ({"image_size": (28, 28, 3)}, "image_size="),
    ({"image_size": 28.0}, "image_size=28.0"),
    ({"image_size": 28, "channels": 2}, "channels=2; expected 1 or 3"),
    ({"image_size": 28, "channels": 3, "mean": (0.1, 0.2)}, r"mean=\[0.1, 0.2\] has 2 values; expected 1 or 3"),
    ({"image_size": 28, "std": (0.0,)}, "std=.*must be > 0"),
    ({"image_size": 28, "mean": ("a",)}, "expected numbers"),
    ({"image_size": 28, "resize": "squash"}, "resize='squash'; expected one of stretch, pad, crop"),
    ({"image_size": 28, "pad_value": 2.0}, "pad_value=2.0"),
])
def test_bad_specs_are_refused(kwargs, fragment):
    with pytest.raises(ModelError, match=fragment):
        PreprocessSpec(**kwargs)


def test_from_dict_refuses_unknown_keys_with_the_valid_ones():
    with pytest.raises(ModelError, match="unknown key.*'size'.*valid keys: image_size, channels, mean, std, resize, pad_value"):
        PreprocessSpec.from_dict({"size": 28})
    with pytest.raises(ModelError, match="lacks 'image_size'"):
        PreprocessSpec.from_dict({"channels": 1})


def test_grey_to_three_channels_repeats_the_normalised_grey():
    spec = PreprocessSpec(32, 3, IMAGENET_MEAN, (0.229, 0.224, 0.225))
    out = preprocess(_cxr(), spec)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    grey = preprocess(_cxr(), PreprocessSpec(32, 1))[0]
    for c in range(3):
        torch.testing.assert_close(out[c], (grey - IMAGENET_MEAN[c]) / spec.std[c])


def test_rgb_to_one_channel_uses_the_luma_weights():
    red = np.zeros((10, 12, 3), np.float32)
    red[..., 0] = 1.0
    out = preprocess(red, PreprocessSpec((5, 6), 1))
    assert out.shape == (1, 5, 6)
    torch.testing.assert_close(out, torch.full((1, 5, 6), 0.299))


def test_normalisation_values():
    image = np.full((40, 40), 0.5, np.float32)
    torch.testing.assert_close(preprocess(image, PreprocessSpec(20, 1, (0.5,), (0.25,))), torch.zeros(1, 20, 20))
    torch.testing.assert_close(preprocess(image, PreprocessSpec(20, 1, (0.25,), (0.5,))), torch.full((1, 20, 20), 0.5))


def test_preprocessing_is_deterministic():
    spec = PreprocessSpec(37, 3, IMAGENET_MEAN, (0.2,), "pad")
    first = preprocess(_skin(), spec)
    assert torch.equal(first, preprocess(_skin(), spec))
    assert torch.equal(first, preprocess_batch([_skin()], spec)[0])


def test_downsampling_is_antialiased():
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)
    out = preprocess(checker, PreprocessSpec(8, 1))
    # plain bilinear sampling would keep 0s and 1s; an antialiased resize averages them
    torch.testing.assert_close(out, torch.full((1, 8, 8), 0.5), atol=0.02, rtol=0)


def test_stretch_ignores_the_aspect_ratio():
    assert preprocess(np.ones((30, 90), np.float32), PreprocessSpec((16, 24), 1)).shape == (1, 16, 24)


def test_pad_keeps_the_aspect_ratio_and_centres_the_image():
    wide = np.ones((20, 40), np.float32)
    out = preprocess(wide, PreprocessSpec(32, 1, resize="pad", pad_value=0.0))[0]
    assert out.shape == (32, 32)
    assert torch.equal(out[:8], torch.zeros(8, 32)) and torch.equal(out[24:], torch.zeros(8, 32))
    torch.testing.assert_close(out[8:24], torch.ones(16, 32))


def test_crop_keeps_the_aspect_ratio_and_takes_the_centre():
    wide = np.zeros((20, 40), np.float32)
    wide[:, 20:] = 1.0
    out = preprocess(wide, PreprocessSpec(20, 1, resize="crop"))[0]
    assert out.shape == (20, 20)
    assert torch.equal(out[:, :10], torch.zeros(20, 10)) and torch.equal(out[:, 10:], torch.ones(20, 10))


def test_an_image_of_the_right_size_is_not_resampled():
    image = _cxr(28)
    np.testing.assert_array_equal(preprocess(image, PreprocessSpec(28, 1)).numpy()[0], image)
    np.testing.assert_array_equal(preprocess(image[..., None], PreprocessSpec(28, 1)).numpy()[0], image)


@pytest.mark.parametrize("image, fragment", [
    (np.zeros((8, 8), np.uint8), "dtype uint8"),
    (np.full((8, 8), 1.5, np.float32), r"values lie in \[1.5, 1.5\]"),
    (np.full((8, 8), np.nan, np.float32), "NaN"),
    (np.zeros((8, 8, 4), np.float32), r"got shape \(8, 8, 4\)"),
    (np.zeros((0, 8), np.float32), "empty image"),
    ([[0.0, 1.0]], "numpy array"),
])
def test_bad_images_are_refused(image, fragment):
    with pytest.raises(ModelError, match=fragment):
        preprocess(image, PreprocessSpec(8, 1))


def test_batch_of_images_of_different_sizes():
    spec = PreprocessSpec(24, 3, (0.5,), (0.5,))
    images = [_cxr(50), _skin(70), _cxr(24)]
    batch = preprocess_batch(images, spec)
    assert batch.shape == (3, 3, 24, 24)
    for image, row in zip(images, batch):
        assert torch.equal(row, preprocess(image, spec))
    stack = np.stack([_cxr(30), _cxr(30)])
    assert preprocess_batch(stack, spec).shape == (2, 3, 24, 24)
    assert preprocess_batch([], spec).shape == (0, 3, 24, 24)
    with pytest.raises(ModelError, match="stack of images"):
        preprocess_batch(_cxr(30)[0], spec)
