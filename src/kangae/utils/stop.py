"""Stopping a long computation that nobody waits for any more.

The web app runs masks and edit searches in worker threads. When the page that asked for one
moves on (a new picture: the browser aborts the request), the answer is worthless, and a
mask of hundreds of steps would hold the app's only mask worker for seconds. The caller
sets a :class:`threading.Event`; the work runs inside :func:`stop_when` with that event, and
the long loops (the masks', activation maximization's, PGD's and the edit search's steps) call
:func:`check_stop` once per step, which raises :class:`Stopped` once it is set.

The event is per thread (a ``threading.local``), so nothing outside the block, and no other
thread, is affected; :func:`kangae.utils.threads.map_pieces` hands it on to its workers.
A computation outside any :func:`stop_when` block never stops.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


class Stopped(Exception):
    """The computation was stopped because its caller no longer wants the answer."""


def current_stop() -> threading.Event | None:
    """The event this thread's work stops on, if any."""
    return getattr(_local, "event", None)


@contextmanager
def stop_when(event: threading.Event | None) -> Iterator[None]:
    """Within the block, :func:`check_stop` raises :class:`Stopped` once ``event`` is set
    (None: never). The thread's previous event comes back on exit."""
    before = current_stop()
    _local.event = event
    try:
        yield
    finally:
        _local.event = before


def check_stop() -> None:
    """Raise :class:`Stopped` if this thread's work was asked to stop (see :func:`stop_when`)."""
    event = current_stop()
    if event is not None and event.is_set():
        raise Stopped("stopped: the answer is no longer wanted")
