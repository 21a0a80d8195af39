"""Loaders for public data sets; each module registers its entries on import.

Every loader takes the folder that holds a set in its official on-disk layout
and returns a :class:`~dxlab.datasets.manifest.Manifest`.
"""

from dxlab.datasets.sources import (  # noqa: F401  (imported for their registrations)
    breakhis,
    cbis_ddsm,
    ham10000,
    isic2019,
    medmnist,
    mini_mias,
    nct_crc,
    nlm_tb,
    ph2,
    tb_cxr_db,
    tbx11k,
    wisconsin,
)
