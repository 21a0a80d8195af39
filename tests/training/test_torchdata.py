import torch

from dxlab.datasets.synthetic import synthesize
from dxlab.models.preprocessing import PreprocessSpec
from dxlab.training.config import AugmentConfig
from dxlab.training.torchdata import ManifestImages, build_augment


def test_augmentation_is_a_function_of_seed_epoch_and_index(tmp_path):
    manifest, _ = synthesize("tb_cxr", tmp_path / "s", n=10, seed=0, size=32)
    spec = PreprocessSpec(image_size=32, channels=1, mean=(0.5,), std=(0.25,))
    aug = AugmentConfig(rotate_degrees=10, zoom=0.1, translate=0.1, intensity=0.1, contrast=0.2, probability=1.0)
    a = ManifestImages(manifest, spec, augment=build_augment(aug, 32), seed=1)
    b = ManifestImages(manifest, spec, augment=build_augment(aug, 32), seed=1)
    x0, y0 = a[3]
    assert x0.shape == (1, 32, 32) and x0.dtype == torch.float32 and y0 == manifest.label_indices()[3]
    assert type(x0) is torch.Tensor, "a plain tensor, not MONAI's MetaTensor"
    assert torch.equal(x0, b[3][0]), "same seed, epoch and index: same image"
    assert not torch.equal(x0, a.base(3)), "augmentation changed the image"
    a.set_epoch(1)
    assert not torch.equal(a[3][0], x0), "another epoch: another draw"
    assert torch.equal(a.base(3), b.base(3)), "the cached base image is never augmented in place"


def test_no_augmentation_configured():
    assert build_augment(AugmentConfig(), 32) is None
