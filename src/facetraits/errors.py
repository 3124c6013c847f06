"""Errors a user can act on: each names the file, row or key at fault."""


class FaceTraitsError(Exception):
    """Base of every error the study reports to its user."""


class ConfigError(FaceTraitsError):
    """params.yaml (or a value derived from it) is malformed."""


class DataError(FaceTraitsError):
    """A data set file, row, image or rating is missing or invalid."""


class OutputError(FaceTraitsError):
    """An output path cannot be written (e.g. its folder is a file, or the file system is read-only)."""
