"""User-facing errors: one line that says what is wrong and how to fix it."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnkitError(Exception):
    """Bad input from the user. The CLI prints `error: <message>` and exits non-zero, never a traceback."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or a list of the choices when none is close."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return f"; did you mean {' or '.join(repr(c) for c in close)}?"
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"; choose one of: {shown}"


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> CnnkitError:
    """The error for an unknown model, optimizer, loss, ... name."""
    return CnnkitError(f"unknown {kind} {name!r}{did_you_mean(name, choices)}")
