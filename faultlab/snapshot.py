"""Snapshot and restore of a whole `Lab`: pay for setup once, then each run costs what it executes.

A lab is a machine (Unicorn, frames, stage 1: emu/checkpoint.py rewinds it)
plus the Python state of everything wired to it: the pKVM model (ownership,
stage 2, injections, its policy), the host (extable, task, fixups), the lab's
own buffers and guest pages. That Python state is restored *in place*: every
mutable object reachable from the lab when the snapshot is taken gets back
the contents it had then (a dict its items, a list its elements, an object
its attributes), so objects keep their identity - closures installed at
setup (the host's vector handlers, the machine's exit table) still point at
the live objects. Objects created after the snapshot simply become
unreachable again.

The walk does not descend into what is immutable by construction (frozen
dataclasses still are walked, but never recorded), nor into opaque objects
whose state lives elsewhere or never changes after boot: the machine (its
checkpoint), the Unicorn/capstone/keystone bindings, a parsed vmlinux, the
shared assembly cache. An unknown C container (one the walk cannot restore)
is refused when the snapshot is taken, not silently skipped.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import re
import types
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from emu import checkpoint
from emu.checkpoint import Checkpoint
from emu.cpu import Cpu
from emu.machine import Machine
from emu.memory import PhysicalMemory, Stage1
from kasm import AsmCache
from kimage.elf import Vmlinux

_ATOMIC = (type(None), bool, int, float, complex, str, bytes, range, type, types.ModuleType, types.BuiltinFunctionType,
           types.BuiltinMethodType, types.MethodWrapperType, types.WrapperDescriptorType, types.MethodDescriptorType,
           types.GetSetDescriptorType, types.MemberDescriptorType, memoryview, enum.Enum, re.Pattern, Path)
_OPAQUE_MODULES = ("unicorn", "capstone", "keystone", "ctypes", "_ctypes", "elftools")
# Objects whose state is not the lab's to restore: the machine rewinds itself; a parsed vmlinux
# and the process's assembly memo are shared, and never change because a routine ran.
OPAQUE_TYPES: tuple[type, ...] = (Machine, PhysicalMemory, Stage1, Cpu, Vmlinux, AsmCache)


class SnapshotError(RuntimeError):
    """A lab holds state the snapshot cannot restore (a container type it does not know)."""


@functools.lru_cache(maxsize=None)
def _frozen(cls: type) -> bool:
    params = getattr(cls, "__dataclass_params__", None)
    return params is not None and params.frozen and dataclasses.is_dataclass(cls)


@functools.lru_cache(maxsize=None)
def _opaque_module(cls: type) -> bool:
    module = getattr(cls, "__module__", "") or ""
    return module.split(".")[0] in _OPAQUE_MODULES


class ObjectImage:
    """The shallow state of every mutable object reachable from `roots`, to put back in place."""

    def __init__(self, roots: Iterable[Any], *, opaque: tuple[type, ...] = OPAQUE_TYPES, frozen_ids: Iterable[int] = ()) -> None:
        self.dicts: list[tuple[dict, dict]] = []
        self.lists: list[tuple[list, list]] = []
        self.sets: list[tuple[set, set]] = []
        self.others: list[tuple[Any, Any]] = []  # bytearray, deque, __slots__ objects
        self._keep: list[Any] = []  # everything recorded stays alive, so ids stay unique
        seen: set[int] = set(frozen_ids)
        stack = list(roots)
        while stack:
            obj = stack.pop()
            if isinstance(obj, _ATOMIC) or id(obj) in seen:
                continue
            seen.add(id(obj))
            cls = type(obj)
            if isinstance(obj, opaque) or _opaque_module(cls):
                continue
            self._keep.append(obj)
            if isinstance(obj, dict):
                self.dicts.append((obj, dict(obj)))
                stack.extend(obj.keys())
                stack.extend(obj.values())
            elif isinstance(obj, list):
                self.lists.append((obj, list(obj)))
                stack.extend(obj)
            elif isinstance(obj, (set, collections.deque)):
                if isinstance(obj, set):
                    self.sets.append((obj, set(obj)))
                else:
                    self.others.append((obj, list(obj)))
                stack.extend(obj)
            elif isinstance(obj, (tuple, frozenset)):
                stack.extend(obj)
            elif isinstance(obj, bytearray):
                self.others.append((obj, bytes(obj)))
            elif isinstance(obj, types.FunctionType):
                stack.extend(cell.cell_contents for cell in obj.__closure__ or () if _cell_full(cell))
                stack.extend(obj.__defaults__ or ())
            elif isinstance(obj, types.MethodType):
                stack.append(obj.__self__)
            elif isinstance(obj, functools.partial):
                stack.extend((obj.func, obj.args, obj.keywords))
            else:
                d = getattr(obj, "__dict__", None)
                slots = _slots(cls)
                if d is None and not slots:
                    raise SnapshotError(f"cannot snapshot a {cls.__module__}.{cls.__qualname__}: no attributes to restore")
                if d is not None:
                    if not _frozen(cls):
                        self.dicts.append((d, dict(d)))
                    stack.extend(d.values())
                if slots:
                    values = {name: getattr(obj, name) for name in slots if hasattr(obj, name)}
                    self.others.append((obj, values))
                    stack.extend(values.values())

    @property
    def size(self) -> int:
        """How many mutable objects a restore puts back."""
        return len(self.dicts) + len(self.lists) + len(self.sets) + len(self.others)

    def restore(self) -> None:
        for d, saved in self.dicts:
            d.clear()
            d.update(saved)
        for lst, saved in self.lists:
            lst[:] = saved
        for s, saved in self.sets:
            s.clear()
            s |= saved
        for obj, saved in self.others:
            if isinstance(obj, bytearray):
                obj[:] = saved
            elif isinstance(obj, collections.deque):
                obj.clear()
                obj.extend(saved)
            else:
                for name in _slots(type(obj)):
                    if name in saved:
                        object.__setattr__(obj, name, saved[name])
                    elif hasattr(obj, name):
                        object.__delattr__(obj, name)


def _cell_full(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _slots(cls: type) -> tuple[str, ...]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [s for s in slots if s not in ("__dict__", "__weakref__")]
    return tuple(names)


@dataclass(eq=False)
class LabSnapshot:
    """A lab's machine checkpoint and the image of its Python state."""

    checkpoint: Checkpoint
    image: ObjectImage

    @property
    def objects(self) -> int:
        return self.image.size


def take(lab: Any, *, frozen: Iterable[Any] = ()) -> LabSnapshot:
    """Snapshot `lab` (a `faultlab.lab.Lab`); `frozen`: big objects known not to change after boot (a vmlinux's symbols)."""
    return LabSnapshot(checkpoint.take(lab.machine), ObjectImage([lab], frozen_ids=[id(x) for x in frozen]))


def restore(lab: Any, snap: LabSnapshot) -> None:
    """Put `lab` back as it was at `snap` (the lab's latest snapshot)."""
    checkpoint.rewind(lab.machine, snap.checkpoint)
    snap.image.restore()




class LabPool:
    """Labs set up once and restored for every later use, least recently used out past `max_labs`.

    `get(key, build)` builds the lab the first time (and snapshots it), then
    restores that snapshot on every later call: the lab handed out is the
    same object each time, valid until the next `get` of the same key.
    Keys are the caller's (e.g. a scenario and a policy); `refs` keeps what
    the key names alive, so an id() in a key is never reused while pooled.
    """

    def __init__(self, max_labs: int = 16) -> None:
        self.max_labs = max_labs
        self._labs: collections.OrderedDict[Any, tuple[Any, LabSnapshot, Any]] = collections.OrderedDict()
        self.builds = 0
        self.restores = 0

    def __len__(self) -> int:
        return len(self._labs)

    def get(self, key: Any, build: Callable[[], Any], refs: Any = None) -> Any:
        hit = self._labs.get(key)
        if hit is not None:
            self._labs.move_to_end(key)
            lab, snap, _ = hit
            lab.restore(snap)
            self.restores += 1
            return lab
        lab = build()
        self._labs[key] = (lab, lab.snapshot(), refs)
        self.builds += 1
        while len(self._labs) > self.max_labs:
            self._labs.popitem(last=False)
        return lab

    def clear(self) -> None:
        self._labs.clear()


__all__ = ["LabPool", "LabSnapshot", "ObjectImage", "OPAQUE_TYPES", "SnapshotError", "restore", "take"]
