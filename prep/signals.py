"""Ctrl-C at any moment ends prep with exit 130 and one line, never a traceback or an abort.

Python delivers Ctrl-C as ``KeyboardInterrupt`` wherever the main thread happens to be: inside
an import (where a C++ extension such as torch's may turn it into ``std::terminate``), inside
``fork`` or a lock. :func:`deferred_sigint` turns it into a flag around such stretches and
raises it at the end; :func:`exit_on_sigint` covers the start-up, before the command line can
catch anything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

INTERRUPTED = 130


def exit_on_sigint() -> None:
    """Until :func:`restore_sigint`: Ctrl-C prints ``prep: interrupted`` and exits 130 at once
    (start-up imports, where there is nothing to clean up)."""
    signal.signal(signal.SIGINT, _exit_interrupted)


def restore_sigint() -> None:
    """Ctrl-C raises ``KeyboardInterrupt`` again (Python's default)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _exit_interrupted(signum, frame) -> None:
    os.write(2, b"prep: interrupted\n")
    os._exit(INTERRUPTED)


@contextlib.contextmanager
def deferred_sigint() -> Iterator[Callable[[], bool]]:
    """Turn Ctrl-C into a flag inside the block (the block may poll it) and raise
    ``KeyboardInterrupt`` at its end, so it never lands inside ``fork``, a lock or an import."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    hits: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: hits.append(signum))
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, previous)
    if hits:
        raise KeyboardInterrupt
