"""Errors with messages that name the offending file and say what to do."""


class PVQAEError(Exception):
    """Base class of the project's own, user-facing errors."""


class DataError(PVQAEError, ValueError):
    """Bad input data: missing folder, empty class, corrupt image, mask mismatch..."""


class TrainingError(PVQAEError, RuntimeError):
    """Training went wrong in a way the user must act on (e.g. a NaN loss)."""
