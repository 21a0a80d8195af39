"""Data sets: the registry of public sets and their loaders, image and DICOM
decoding, manifests, splits, importers for one's own data, and synthetic data.
"""

from dxlab.datasets.images import read_image, to_channels
from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, get_dataset, list_datasets, register_dataset
from dxlab.datasets.splits import split_manifest

__all__ = [
    "DatasetSpec",
    "Manifest",
    "build_manifest",
    "get_dataset",
    "list_datasets",
    "read_image",
    "register_dataset",
    "split_manifest",
    "to_channels",
]
