"""The two C library calls Python's ``os`` module lacks, from one loader.

- :func:`heap_trimmer`: glibc's ``malloc_trim``, so the OCR worker gives ONNX Runtime's freed
  buffers back to the OS (``memestream.ocr``);
- :func:`parent_death_signal`: ``prctl(PR_SET_PDEATHSIG)``, so a broker started for a test or
  a demo dies with the Python process that started it (``producers.broker``);

The library is the process's own (``dlopen(NULL)``): it is already mapped, its symbols are
libc's, and finding it needs no ``ldconfig`` subprocess (``ctypes.util.find_library`` runs
one, which a forked child must not). Every call degrades to "unavailable" (None or False)
where the platform lacks it (musl, macOS): callers then do without.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Any, Callable

#: ``prctl`` option: deliver a signal to this process when its parent thread exits (Linux).
PR_SET_PDEATHSIG = 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):  # TypeError: a platform without dlopen(NULL)
        return None


@functools.cache
def _function(name: str, argtypes: tuple[Any, ...] | None, restype: Any) -> Any:
    """The C function ``name`` with its signature set, or None where the C library lacks it."""
    lib = _libc()
    try:
        fn = getattr(lib, name) if lib is not None else None
    except AttributeError:
        return None
    if fn is not None:
        if argtypes is not None:  # None: a variadic function (prctl) takes its arguments as given
            fn.argtypes = list(argtypes)
        fn.restype = restype
    return fn


def heap_trimmer() -> Callable[[], None] | None:
    """A call that returns the heap's free memory to the OS (glibc ``malloc_trim(0)``, ~10 ms),
    or None when the C library has no such function."""
    trim = _function("malloc_trim", (ctypes.c_size_t,), ctypes.c_int)
    if trim is None:
        return None

    def trim_heap() -> None:
        trim(0)

    return trim_heap


def parent_death_signal(sig: int) -> Callable[[], None] | None:
    """For ``subprocess.Popen(preexec_fn=...)``: the child gets ``sig`` when its parent dies.

    Resolved here, in the parent; the returned function only makes the system call, which is
    all a forked child may safely do. None where ``prctl`` does not exist (not Linux): the
    child may then outlive a crashed parent.
    """
    prctl = _function("prctl", None, ctypes.c_int)
    if prctl is None:
        return None
    option, signum = ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(int(sig))

    def die_with_parent() -> None:
        prctl(option, signum)

    return die_with_parent
