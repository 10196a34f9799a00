"""Errors a user can fix. The CLI prints their message (no traceback) and exits with status 2."""


class VarformerError(Exception):
    """Base class for bad input: a wrong config key, a missing folder or weight file, unpaired images, ..."""


class ConfigError(VarformerError, ValueError):
    """A configuration problem: unknown key, wrong type, missing config file."""


class WeightsNotFoundError(VarformerError, FileNotFoundError):
    """A weight file is missing; the message says what to download and where to put it."""


class CheckpointMismatchError(VarformerError, RuntimeError):
    """A checkpoint of another architecture, depth or stage was given."""


class DataError(VarformerError, ValueError):
    """A dataset problem: missing root, no pairs, unpaired/unreadable images, size mismatch."""
