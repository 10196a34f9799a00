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


class RunFolderError(VarformerError, RuntimeError):
    """A training output folder that cannot take this run: another run's, locked by a running process, finished."""


class OutputError(VarformerError, RuntimeError):
    """An output that cannot be written without losing something: a file or folder this program did not make, an
    input named as the output, two outputs of one name, a place that cannot be written."""


def worker_message(text: str) -> str:
    """The original message of an error a DataLoader worker raised. PyTorch re-raises it in the main process with
    the worker's whole traceback as its message ("Caught DataError in DataLoader worker process 0. Original
    Traceback ..."); the user needs only its last line, without the exception's module path."""
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else text
    head, sep, rest = last.partition(": ")
    return rest if sep and "." in head and " " not in head else last
