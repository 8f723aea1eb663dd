"""Counting the memory a piece of code holds: live bytes of the tensors it allocated.

``LiveBytes`` is a dispatch mode: every tensor operation run inside it whose
output does not share storage with an input allocated new memory; that storage
is counted until the last tensor inside the mode's reach that refers to it is
freed. ``live`` is the sum now, ``peak`` the maximum since ``reset_peak``.
Run only the code to measure inside the mode (e.g. the P-NE logger's calls):
the forward and backward passes outside it are not counted, so the numbers
are the logger's own memory, on any device, without the allocator's caching.
Storages of at least ``large`` bytes (e.g. half a gradient) are also summed
apart (``live_large``, ``peak_large``): the buffers of the gradient's size,
without the chunk-sized temporaries.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveBytes(TorchDispatchMode):
    """Bytes held by the storages that operations run inside this mode allocated."""

    def __init__(self, large: int | None = None):
        super().__init__()
        self.large = large
        self.live = self.peak = 0
        self.live_large = self.peak_large = 0
        self._refs: dict[int, list[int]] = {}  # storage pointer -> [tensors alive, bytes]
        self._seen: set[int] = set()  # ids of the live tensors counted

    def reset_peak(self) -> None:
        self.peak, self.peak_large = self.live, self.live_large

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {_storage(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor) or id(tensor) in self._seen:
                continue
            key = _storage(tensor)
            if key in self._refs:  # a new view of a storage allocated in here
                self._track(tensor, key)
            elif key not in inputs and key != 0:  # new memory
                self._refs[key] = [0, tensor.untyped_storage().nbytes()]
                self._count(self._refs[key][1])
                self._track(tensor, key)
        return out

    def _track(self, tensor: torch.Tensor, key: int) -> None:
        self._seen.add(id(tensor))
        self._refs[key][0] += 1
        weakref.finalize(tensor, self._release, key, id(tensor))

    def _release(self, key: int, tensor_id: int) -> None:
        self._seen.discard(tensor_id)
        entry = self._refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self._count(-entry[1])
            del self._refs[key]

    def _count(self, nbytes: int) -> None:
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        if self.large is not None and abs(nbytes) >= self.large:
            self.live_large += nbytes
            self.peak_large = max(self.peak_large, self.live_large)


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()
