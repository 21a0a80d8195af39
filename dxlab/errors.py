"""The exceptions dxlab raises for bad input or a bad environment.

Every error says what was wrong, the value, and what was expected; the CLI
prints the message and exits non-zero without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class DxlabError(Exception):
    """Base class of every error dxlab raises on purpose."""


class SettingsError(DxlabError):
    """A setting (environment variable) holds a value that cannot be used."""


class DatasetError(DxlabError):
    """A data set, manifest or image file is missing, malformed or unsupported.

    ``path`` names the file or folder at fault when there is one; it is put in
    front of the message so that the user sees which file to look at.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ChecksumError(DatasetError):
    """A downloaded or local file does not match its published checksum."""


class DataUnavailableError(DatasetError):
    """A data set cannot be fetched here (offline, or behind a registration page)."""


class ConfigError(DxlabError):
    """A run config is missing, malformed, or holds an unknown key or a bad value."""


class EvaluationError(DxlabError, ValueError):
    """Labels, probabilities or logits handed to evaluation are malformed, or a
    metric is undefined for them (AUROC on a single class, say).

    It is also a ``ValueError``, so callers that catch bad values in general
    catch it too.
    """


class ModelError(DxlabError):
    """A model builder, its arguments, its weights or a packaged model cannot be used."""


class ServingError(DxlabError):
    """A request the inference service cannot answer, or a model it cannot serve.

    ``status`` is the HTTP status the service answers with (subclasses in
    :mod:`dxlab.serving.engine` set it: 400, 404, 413, 429, 503, 504);
    ``retry_after`` (seconds) is sent as ``Retry-After`` when set.
    """

    status: int = 500

    def __init__(self, message: str, *, status: int | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.retry_after = retry_after
