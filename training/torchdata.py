"""Torch data sets over a manifest: decode once, cache, augment with MONAI.

Decoded and preprocessed images are cached in memory between epochs (the
decode is the slow part: PNG/JPEG/DICOM decompression and resizing).
Augmentation is a pure function of (seed, epoch, index), so a run gives the
same batches whether it is resumed from a checkpoint, split over DDP ranks, or
loaded by several workers.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import torch

from dxlab.datasets import Manifest
from dxlab.datasets.images import read_image
from dxlab.models.preprocessing import PreprocessSpec, preprocess
from dxlab.training.config import AugmentConfig


def build_augment(cfg: AugmentConfig, size: int):
    """MONAI augmentations for (C, H, W) tensors of side ``size``, from the config; None when all are off."""
    # imported here: MONAI pulls in MLflow and matplotlib, which write caches on import
    from monai import transforms as mt

    steps: list[Callable] = []
    p = cfg.probability
    if cfg.flip_horizontal > 0:
        steps.append(mt.RandFlip(prob=cfg.flip_horizontal, spatial_axis=1))
    if cfg.rotate_degrees or cfg.zoom or cfg.translate:
        steps.append(mt.RandAffine(
            prob=p,
            rotate_range=np.deg2rad(cfg.rotate_degrees) if cfg.rotate_degrees else None,
            scale_range=(cfg.zoom, cfg.zoom) if cfg.zoom else None,
            # MONAI translates in pixels; the config gives a fraction of the image side
            translate_range=(cfg.translate * size, cfg.translate * size) if cfg.translate else None,
            padding_mode="border",
        ))
    if cfg.intensity:
        steps.append(mt.RandScaleIntensity(factors=cfg.intensity, prob=p))
        steps.append(mt.RandShiftIntensity(offsets=cfg.intensity, prob=p))
    if cfg.contrast:
        steps.append(mt.RandAdjustContrast(prob=p, gamma=(1 - cfg.contrast, 1 + cfg.contrast)))
    return mt.Compose(steps) if steps else None


class ManifestImages(torch.utils.data.Dataset):
    """(image tensor (C, H, W), label index) pairs of one manifest."""

    def __init__(
        self,
        manifest: Manifest,
        spec: PreprocessSpec,
        *,
        augment: Callable | None = None,
        seed: int = 0,
        cache: bool = True,
        reader: Callable = read_image,
    ) -> None:
        self.paths = manifest.paths()
        self.labels = manifest.label_indices()
        self.spec = spec
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.reader = reader
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def base(self, index: int) -> torch.Tensor:
        """The preprocessed image, without augmentation (cached)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        x = preprocess(self.reader(self.paths[index]), self.spec)
        if self._cache is not None:
            self._cache[index] = x
        return x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.base(index)
        if self.augment is not None:
            # 32-bit seed from (seed, epoch, index): deterministic and independent per item
            self.augment.set_random_state(seed=zlib.crc32(f"{self.seed}:{self.epoch}:{index}".encode()))
            x = self.augment(x)
            # MONAI returns a MetaTensor; its metadata tracking slows every op of the forward pass
            x = (x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)).float()
        return x, self.labels[index]
