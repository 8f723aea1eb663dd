"""Checkpoint, resume-state and corpus files that cannot run code when read (issue 20).

``torch.load(..., weights_only=False)`` unpickles whatever a file holds, so opening a
checkpoint someone else released could run their code. Every such file of the study
holds only tensors and plain containers (dict, list, tuple, str, int, float, bool,
None), is written by ``save_plain`` (which refuses anything else before writing) and
read by ``load_plain`` through ``torch.load(weights_only=True)``, whose unpickler
builds tensors and those containers and refuses every other global without calling
it. A refused file stops the job with a message naming the file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

PLAIN = (str, int, float, bool, type(None), torch.Tensor)


class UnsafeCheckpointError(ValueError):
    """A file holds a pickled object other than tensors and plain containers."""


def plain_path(obj: object, where: str = "") -> str | None:
    """The key path of the first value that is not a tensor or plain container; None if all are."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str | int):
                return f"{where}[{key!r}] (key of type {type(key).__name__})"
            found = plain_path(value, f"{where}[{key!r}]")
            if found is not None:
                return found
        return None
    if isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            found = plain_path(value, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    if type(obj) in PLAIN or isinstance(obj, torch.Tensor):
        return None
    return f"{where or 'the object'} (type {type(obj).__module__}.{type(obj).__qualname__})"


def save_plain(obj: dict, path: str | Path, what: str = "checkpoint") -> None:
    """Write ``obj`` (tensors and plain containers only) to ``path`` atomically (temp, rename)."""
    path = Path(path)
    found = plain_path(obj)
    if found is not None:
        raise UnsafeCheckpointError(
            f"{path}: the {what} would hold {found}, which is not a tensor or plain container; "
            "convert it (float(), .tolist(), a dict) before saving"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_plain(path: str | Path, what: str = "checkpoint") -> dict:
    """Read a file ``save_plain`` wrote, on the CPU; nothing in it is executed.

    Raises ``UnsafeCheckpointError`` when the file holds any other pickled object (a
    callable, a class instance, a numpy array) and ``ValueError`` when it cannot be read.
    """
    path = Path(path)
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()
        detail = next((line for line in reason if "GLOBAL" in line or "global" in line), "")
        raise UnsafeCheckpointError(
            f"{path}: the {what} holds a pickled object other than tensors and plain "
            f"containers{': ' + detail.strip() if detail else ''}; refused without loading it "
            "(only files written by training.checkpoints.save_plain are read)"
        ) from None
    except (OSError, RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: cannot read the {what} ({err})") from err
