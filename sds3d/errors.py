"""The one exception type for bad input, and pickle-free loading of files from outside.

`InputError` is a config value, flag or file the user can fix: its message is one line naming it
and the fix. The CLI prints it as `sds3d: error: ...` with exit code 2; the web UI shows it as is.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path


class InputError(ValueError):
    """Bad input, with a one-line message naming the field, flag or file and how to fix it."""


class TrainingDiverged(InputError):
    """A run whose loss, gradients or parameters stopped being finite (usually a learning rate or a
    guidance scale that is too large); the last good checkpoint is kept."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type's name."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """A torch checkpoint read with `weights_only=True`: tensors, dicts, lists, tuples, numbers and
    strings, never code. InputError for a missing, empty, truncated or foreign file, or one whose
    pickle asks for anything else (such a payload is refused before it can run)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {what} file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the {what} file is empty")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error):  # a class or function the weights-only unpickler refuses
            raise InputError(f"{path}: refused to load: the {what} holds objects other than tensors and plain data "
                             f"(loading it could run code)") from None
        raise InputError(f"{path}: not a readable {what} (truncated or another kind of file)") from None
    except Exception:  # torch raises many types for a damaged file (RuntimeError, EOFError, KeyError, ...)
        raise InputError(f"{path}: not a readable {what} (truncated or another kind of file)") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a {what} (it holds a {type(state).__name__}, not a dict)")
    return state
