"""Errors a user can act on: each names the file, row or key at fault."""

from pathlib import Path


class FaceTraitsError(Exception):
    """Base of every error the study reports to its user."""


class ConfigError(FaceTraitsError):
    """params.yaml (or a value derived from it) is malformed."""


class DataError(FaceTraitsError):
    """A data set file, row, image or rating is missing or invalid."""


class OutputError(FaceTraitsError):
    """An output path cannot be written (e.g. its folder is a file, or the file system is read-only)."""


def expected_failure(exc: BaseException) -> str | None:
    """What the `error:` line says for a failure that an input, not the code, causes: a FaceTraitsError, or a
    file unreadable, truncated or not what it claims, a store that cannot be opened, memory exhausted. None for
    anything else: a bug, whose traceback is shown. Library code names the file where it can; this is the
    contract's net for the rest (the stages and the `facetraits` command share it)."""
    import pickle
    import zipfile

    if isinstance(exc, FaceTraitsError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory" + (f" ({exc})" if str(exc) else "") + "; a smaller input or batch size needs less"
    if isinstance(exc, OSError) and exc.filename is not None:
        # a rename of an atomic write's temporary sibling (.<name>.<random>.tmp) onto its target names the target
        if exc.filename2 is None:
            target = exc.filename
        elif Path(str(exc.filename)).name.startswith("."):
            target = exc.filename2
        else:
            target = f"{exc.filename} -> {exc.filename2}"
        return f"{target}: {exc.strerror or type(exc).__name__}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (EOFError, pickle.UnpicklingError, zipfile.BadZipFile)):
        return f"a file is truncated or not in the expected format ({type(exc).__name__}: {exc})"
    if any(cls.__name__ == "MlflowException" for cls in type(exc).__mro__):  # MLflow is heavy: not imported here
        return f"MLflow: {exc}"
    return None
