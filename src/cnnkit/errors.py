"""User-facing errors: one line that says what is wrong and how to fix it."""
from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 60
_BRIEF.maxlevel, _BRIEF.maxlist, _BRIEF.maxtuple, _BRIEF.maxdict, _BRIEF.maxset = 3, 4, 4, 4, 4
BRIEF_LENGTH = 160  # characters at most


class CnnkitError(Exception):
    """Bad input from the user. The CLI prints `error: <message>` and exits non-zero, never a traceback."""

    exit_code = 2


def brief(value: object) -> str:
    """A short repr of user data for a one-line message: at most a few dozen characters and elements, however
    large or deeply nested the value is (reprlib, so a YAML alias bomb is never expanded)."""
    text = _BRIEF.repr(value)
    return text if len(text) <= BRIEF_LENGTH else text[:BRIEF_LENGTH - 3] + "..."


def shown(value: object, limit: int = 200) -> str:
    """str(value) for a message (a path named by a user's file): as it is when printable and at most `limit`
    characters, else as `brief` shows it (quoted, a newline as \\n, shortened)."""
    text = str(value)
    return text if text.isprintable() and len(text) <= limit else brief(text)


def listed(names: Iterable[object], limit: int = 12) -> str:
    """Names joined by commas for a one-line message (a CSV header: 'path,label'): each as it is when printable
    and short, else as `brief` shows it (a newline as \\n); at most `limit` of them, then '...'."""
    parts = [n if isinstance(n, str) and n.isprintable() and len(n) <= 60 else brief(n) for n in names]
    return ",".join(parts[:limit]) + (",..." if len(parts) > limit else "")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or a list of the choices when none is close."""
    name = name if isinstance(name, str) else brief(name)  # a YAML or JSON key may be a number, a list, ...
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return f"; did you mean {' or '.join(repr(c) for c in close)}?"
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"; choose one of: {shown}"


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> CnnkitError:
    """The error for an unknown model, optimizer, loss, ... name."""
    return CnnkitError(f"unknown {kind} {brief(name)}{did_you_mean(name, choices)}")
