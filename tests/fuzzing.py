"""Shared pieces of the parser fuzz tests (tests/**/test_*_fuzz.py): two sizes, hostile values, text mutations.

Every parser of a user file is fuzzed from structured strategies (documents of the format's own keys and tags
with values of every wrong type), from mutations of a valid file, and from raw bytes. Whatever it reads, a parser
returns or raises a one-line CnnkitError: any other exception, a hang or a blow-up fails the test, and Hypothesis
shrinks the input that did it.

    @SIZES
    def test_reader_fuzz(examples):
        fuzz(examples, documents, lambda text: check(read, text))
"""
from __future__ import annotations

import math
import string
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnkit.errors import CnnkitError

FAST, SLOW = 200, 2000  # examples per parser: `make test` and `make test-slow`
SIZES = pytest.mark.parametrize("examples", [FAST, pytest.param(SLOW, marks=pytest.mark.slow)])
MAX_SECONDS = 20.0  # one example; a parser that takes longer on a small input hangs (generous: 2 loaded cores)
MAX_MESSAGE = 2000  # characters: an error message is one short line, never a dump of the input
MAX_EXTRA_MEMORY = 2 << 30  # bytes the fuzzed parsers may allocate beyond what the test process holds


def fuzz(examples: int, strategy: st.SearchStrategy, check: Callable[[object], object]) -> None:
    """check(value) for `examples` values drawn from `strategy`, the same ones on every run (derandomized), with
    the process's memory capped (`memory_cap`): a blow-up is a MemoryError that fails the test, not the machine."""

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value: object) -> None:
        check(value)

    with memory_cap():
        run()


@contextmanager
def memory_cap(extra: int = MAX_EXTRA_MEMORY) -> Iterator[None]:
    """RLIMIT_DATA at the memory the process has now plus `extra` bytes, for the block (Linux; elsewhere no cap)."""
    try:
        import resource

        used = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("VmData:"))
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    except (ImportError, OSError, StopIteration):
        yield
        return
    cap = used + extra if hard == resource.RLIM_INFINITY else min(used + extra, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def clean(read: Callable[..., object], *args: object, **kwargs: object) -> object:
    """read(*args, **kwargs): its result, or None after a one-line CnnkitError; any other exception propagates."""
    start = time.perf_counter()
    try:
        return read(*args, **kwargs)
    except CnnkitError as err:
        message = str(err)
        assert message and "\n" not in message and len(message) < MAX_MESSAGE, message[:MAX_MESSAGE]
        return None
    finally:
        assert time.perf_counter() - start < MAX_SECONDS, f"{getattr(read, '__name__', read)} took too long"


# -- values of every type ------------------------------------------------------------------------------------
NASTY_TEXT = ["", " ", "nan", "NaN", "inf", "-inf", "1e999", "-0", "0x10", "1_000", "²", "٣", "\u2028", "\x00",
              "a\nb", "\r\n", "'", '"', ",", ";", "\\", "..", "../../etc/passwd", "/etc/passwd", "~", "*", "**", "[",
              "{", "}", "%s", "${HOME}", "&amp;", "&x;", "<a>", "\ufeff", "é", "🙂", "x" * 300, "9" * 5000, "1" * 400]

texts = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=16),
                  st.text(alphabet=string.digits + ".-+eE", max_size=12))
numbers = st.one_of(st.integers(-3, 300), st.integers(), st.integers(-(2**80), 2**80), st.sampled_from([2**31, 2**63]),
                    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 0.5]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)


def nested(leaves: st.SearchStrategy = scalars, keys: st.SearchStrategy = texts) -> st.SearchStrategy:
    """JSON-like values: leaves, and small lists and mappings of them, a few levels deep."""
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                        max_leaves=10)


junk = nested()


def mix(*weighted: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, each drawn `weight` times in sum-of-weights (st.one_of ignores repeats)."""
    picks = [k for k, (weight, _) in enumerate(weighted) for _ in range(weight)]
    return st.sampled_from(picks).flatmap(lambda k: weighted[k][1])


def maybe(value: st.SearchStrategy, other: st.SearchStrategy = junk, p_other: int = 4) -> st.SearchStrategy:
    """Mostly `value`, sometimes (1 in `p_other`) anything else."""
    return mix((p_other - 1, value), (1, other))


@st.composite
def mutated(draw: st.DrawFn, base: str | st.SearchStrategy, fragments: st.SearchStrategy = texts) -> str:
    """`base` (a string, or a strategy of strings) after 1 to 4 edits: cut short, a fragment inserted, a span
    deleted, repeated or replaced."""
    text = draw(base) if isinstance(base, st.SearchStrategy) else base
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        edit = draw(st.sampled_from(["cut", "insert", "delete", "repeat", "replace"]))
        if edit == "cut":
            text = text[:i]
        elif edit == "insert":
            text = text[:i] + draw(fragments) + text[i:]
        elif edit == "delete":
            text = text[:i] + text[j:]
        elif edit == "repeat":
            text = text[:j] + text[i:j] * draw(st.integers(1, 3)) + text[j:]
        else:
            text = text[:i] + draw(fragments) + text[j:]
    return text


def as_bytes(text: st.SearchStrategy) -> st.SearchStrategy:
    """Strings as UTF-8, with raw bytes (a few of them not UTF-8 at all) among them."""
    return mix((9, text.map(lambda s: s.encode("utf-8", "surrogatepass"))), (1, st.binary(max_size=200)))


def write_images(folder: Path, broken: bool = True) -> Path:
    """a.png (40×30 RGB), b.png (20×10 grey) and, with `broken`, broken.png (a PNG signature, then junk)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(folder / "b.png")
    if broken:
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


@st.composite
def csv_text(draw: st.DrawFn, header: st.SearchStrategy, cells: Callable[[str], st.SearchStrategy],
             max_rows: int = 5) -> str:
    """A CSV: a header drawn from `header` (a list of names), then rows of cells(column name), mostly as wide as
    the header, written by csv.writer (quoted where needed) or joined with bare commas, '\n' or '\r\n' ends."""
    import csv
    import io

    names = draw(header)
    columns = draw(st.sampled_from([names] * 6 + [names[:-1], [*names, "extra"]]))
    rows = draw(st.lists(st.tuples(*[cells(str(name)) for name in columns]), max_size=max_rows))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    if draw(st.booleans()):
        out = io.StringIO()
        csv.writer(out, lineterminator=end).writerows([names, *rows])
        return out.getvalue()
    return "".join(",".join(map(str, row)) + end for row in [names, *rows])


# YAML that has broken naive loaders: aliases that expand a billion times or into themselves, tags that build
# Python objects (and so run code), impossible dates, deep nesting, huge numbers, odd scalars
LAUGHS = "\n".join(["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                   + [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 9)}]" for k in range(1, 9)])
YAML_TRICKS = [
    LAUGHS, "&a [*a]", "a: &a {b: *a}", "!!python/object/apply:os.system ['true']", "!!python/name:os.system",
    "!!python/object/new:builtins.dict {}", "2001-13-45", "a: 2001-02-30", "a: !!binary '!!!'", "[" * 300,
    "[" * 3000 + "]" * 3000, "{a: " * 300, "a:\n" + "".join(" " * k + "- \n" for k in range(1, 2000)),
    "a: " + "9" * 5000, "a: !!float x", "a: !!int 0x", "<<: *nowhere", "a: &x 1\n<<: *x", "a: 1\na: 2",
    "? [1, 2]\n: 3", "a:\n\t- b", "%YAML 9.9\n--- a", "--- a\n--- b", "a: .nan", "a: -.inf", "a: 0o777",
    "a: 1_000", "a: ~", "\ufeffa: 1", "a: !!set {x, y}", "a: !!omap [x: 1]", "a: '\\x00'",
]
yaml_tricks = st.sampled_from(YAML_TRICKS)
