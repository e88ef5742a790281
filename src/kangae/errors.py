"""Errors a user can fix. The CLI prints them as one line and exits 2 (usage) or 1."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KangaeError(Exception):
    """A problem with the user's input or files, not a bug in kangae."""


class DataError(KangaeError):
    """A dataset file is missing, corrupt or inconsistent."""


class UnknownNameError(KangaeError, KeyError):
    """A model, dataset or layer name that kangae does not know."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = list(known)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(f"unknown {kind} '{name}'.{hint} Known: {', '.join(known)}")
        self.kind, self.name, self.known = kind, name, known

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class RunError(KangaeError):
    """A run folder is missing or holds no usable checkpoint."""
