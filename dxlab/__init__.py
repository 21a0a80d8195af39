"""dxlab: a data science lab platform with AI diagnostic models.

The import package is spread over the project's top-level folders (see
ARCHITECTURE in the README): ``dxlab.datasets`` lives in ``datasets/``,
``dxlab.models`` in ``models/`` and so on. Importing any module needs no
configured environment; settings are read lazily by :mod:`dxlab.settings`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dxlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
