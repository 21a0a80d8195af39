"""A disk cache of decoded images, so a second epoch or a second run skips decoding.

Decoding a compressed DICOM file (JPEG 2000, JPEG lossless) and resizing it
costs from tens of milliseconds to over a second; loading the cached result
costs well under one. Entries are ``.npy`` files under
``$DXLAB_HOME/cache/images`` (or a folder you choose), keyed by

- the file's identity: its SHA-256 (the default; the manifest's ``sha256``
  column can be passed in so nothing is re-hashed), or, with
  ``fingerprint="stat"``, its resolved path, size and modification time (no
  reading at all, but a copied or touched file misses);
- the parameters of the decode (size, window, ...), as JSON;
- :data:`CACHE_VERSION`, bumped when decoding changes, so stale entries miss.

Writes are atomic (a temporary file renamed into place), so concurrent
workers never read half an entry; a corrupt entry is dropped and recomputed.

:func:`load_many` decodes the misses in a process pool (``workers``) and
fills the cache; :func:`load_resized` is the decode-and-resize step most
models want, usable as its ``load`` function.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dxlab.datasets.manifest import sha256_file

log = logging.getLogger(__name__)

#: Part of every key: bump when the decoders change what they return.
CACHE_VERSION = 1
FINGERPRINTS = ("sha256", "stat")


def default_cache_dir() -> Path:
    from dxlab.settings import get_settings

    return get_settings().home / "cache" / "images"


class ImageCache:
    """Arrays on disk, one ``.npy`` per (file, parameters)."""

    def __init__(self, root: str | Path | None = None, *, fingerprint: str = "sha256") -> None:
        if fingerprint not in FINGERPRINTS:
            raise ValueError(f"fingerprint must be one of {', '.join(FINGERPRINTS)}, got {fingerprint!r}")
        self.root = Path(root) if root is not None else default_cache_dir()
        self.fingerprint = fingerprint

    def file_id(self, path: str | Path, sha256: str | None = None) -> str:
        """What identifies the file's content: its SHA-256, or path+size+mtime."""
        if sha256:
            return f"sha256:{sha256}"
        path = Path(path)
        if self.fingerprint == "stat":
            st = path.stat()
            return f"stat:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        return f"sha256:{sha256_file(path)}"

    def key(self, file_id: str, params: Mapping[str, Any]) -> str:
        payload = json.dumps({"v": CACHE_VERSION, "file": file_id, "params": dict(params)}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # a truncated or foreign file: drop it, recompute
            log.warning("dropping unreadable cache entry %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, array: np.ndarray) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, path)


def resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float image (grey or RGB) to ``size`` (an int: square)."""
    from PIL import Image

    width, height = (size, size) if isinstance(size, int) else (size[1], size[0])
    if image.shape[:2] == (height, width):
        return image.astype(np.float32, copy=False)
    if image.ndim == 2:
        return np.asarray(Image.fromarray(image.astype(np.float32, copy=False), mode="F").resize((width, height), Image.BILINEAR))
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32), mode="F").resize((width, height), Image.BILINEAR))
                for c in range(image.shape[-1])]
    return np.stack(channels, axis=-1)


def load_resized(path: str | Path, size: int | None = 224, window: Any = "default") -> np.ndarray:
    """Decode any supported file (DICOM through its LUTs, or PNG/JPEG/TIFF) as grey, resized to ``size``."""
    from dxlab.datasets.dicom import read_any
    from dxlab.datasets.images import to_channels

    image = read_any(path, window=window)
    if image.ndim == 3:
        image = to_channels(image, 1)
    return resize(image, size) if size else image


def _load_star(args: tuple[Callable[..., np.ndarray], str, dict[str, Any]]) -> np.ndarray:
    load, path, params = args
    return load(path, **params)


def load_many(
    paths: Sequence[str | Path],
    load: Callable[..., np.ndarray] = load_resized,
    params: Mapping[str, Any] | None = None,
    *,
    cache: ImageCache | None = None,
    workers: int = 1,
    sha256s: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """``load(path, **params)`` for every path, through the cache, decoding misses in ``workers`` processes.

    ``load`` must be a module-level function (it is sent to worker processes).
    ``sha256s`` (e.g. the manifest's column) saves hashing the files.
    """
    params = dict(params or {})
    tag = {"load": f"{load.__module__}.{load.__qualname__}", **params}
    results: list[np.ndarray | None] = [None] * len(paths)
    keys: list[str | None] = [None] * len(paths)
    misses = []
    for i, path in enumerate(paths):
        if cache is not None:
            keys[i] = cache.key(cache.file_id(path, sha256s[i] if sha256s else None), tag)
            results[i] = cache.get(keys[i])
        if results[i] is None:
            misses.append(i)
    if misses:
        jobs = [(load, str(paths[i]), params) for i in misses]
        if workers > 1 and len(misses) > 1:
            with ProcessPoolExecutor(max_workers=min(workers, len(misses))) as pool:
                decoded = list(pool.map(_load_star, jobs))
        else:
            decoded = [_load_star(job) for job in jobs]
        for i, array in zip(misses, decoded):
            results[i] = array
            if cache is not None:
                cache.put(keys[i], array)
    return results  # type: ignore[return-value]
