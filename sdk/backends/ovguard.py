"""Process state that OpenVINO's CPU plugin reads or changes, guarded around every call into it.

Two faults in OpenVINO 2026.4, both measured here:

* **the oneDNN ISA cap**: the plugin reads ``ONEDNN_MAX_CPU_ISA`` when it loads and compiles, and a
  proposal network compiled under ``AVX2`` on an AVX-512 CPU segfaults when run. The quick start sets
  the cap for torch's training kernels; OpenVINO must not see it.
* **the alternate signal stack**: loading the plugin (a ``Core``'s first ``get_property`` or
  ``compile_model``) installs its own ``sigaltstack`` on the calling thread, and the ``Core``'s
  destruction puts back the one it found. Two ``Core`` objects released in
  creation order leave the thread pointing at freed memory, so the next signal that thread handles
  (``SIGCHLD`` from any child process, e.g. a DataLoader worker exiting) kills the process with
  SIGSEGV or writes its frame into whatever now lives there. Putting the caller's stack back right
  after each call keeps the plugin's stack off our threads.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

log = logging.getLogger(__name__)
ISA_CAP = "ONEDNN_MAX_CPU_ISA"
SS_DISABLE = 2


class _StackT(ctypes.Structure):
    """Linux's ``stack_t`` (the field order differs on other systems)."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _sigaltstack():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sigaltstack
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.POINTER(_StackT), ctypes.POINTER(_StackT)]
    return fn


_SIGALTSTACK = _sigaltstack()


def current_signal_stack() -> Optional[_StackT]:
    """This thread's alternate signal stack (``None`` where it cannot be read)."""
    if _SIGALTSTACK is None:
        return None
    stack = _StackT()
    return stack if _SIGALTSTACK(None, ctypes.byref(stack)) == 0 else None


@contextmanager
def keeping_signal_stack() -> Iterator[None]:
    """Put this thread's alternate signal stack back as it was when the block ends."""
    saved = current_signal_stack()
    try:
        yield
    finally:
        if saved is not None and _SIGALTSTACK is not None:
            saved.ss_flags &= SS_DISABLE  # reading may report SS_ONSTACK, which setting rejects
            if _SIGALTSTACK(ctypes.byref(saved), None) != 0:
                log.warning("could not restore the signal stack after OpenVINO (errno %d)", ctypes.get_errno())


@contextmanager
def without_isa_cap() -> Iterator[None]:
    """Remove oneDNN's ISA cap from the environment for the block (restored afterwards)."""
    value = os.environ.pop(ISA_CAP, None)
    if value is not None:
        log.info("OpenVINO compiles without %s=%s (its CPU plugin crashes under the cap)", ISA_CAP, value)
    try:
        yield
    finally:
        if value is not None:
            os.environ[ISA_CAP] = value


@contextmanager
def openvino_guard() -> Iterator[None]:
    """Both guards: wrap every call that loads the CPU plugin or compiles a model."""
    with without_isa_cap(), keeping_signal_stack():
        yield
