"""cnnkit.errors: one-line user errors, with the closest names suggested (difflib) or the choices listed."""
from __future__ import annotations

import difflib

from cnnkit.errors import CnnkitError, did_you_mean, unknown_name

OPTIMIZERS = ["sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "adamax", "nadam", "ftrl"]


def test_did_you_mean_names_the_close_choices() -> None:
    hint = did_you_mean("adma", OPTIMIZERS)
    assert hint.startswith("; did you mean ") and hint.endswith("?")
    suggested = hint[len("; did you mean "):-1].split(" or ")
    assert 1 <= len(suggested) <= 3 and "'adam'" in suggested
    # each suggestion is at least half similar (difflib's ratio) and no closer one is left out
    ratio = {c: difflib.SequenceMatcher(None, "adma", c).ratio() for c in OPTIMIZERS}
    names = [s.strip("'") for s in suggested]
    assert all(ratio[n] >= 0.5 for n in names)
    assert all(ratio[c] <= min(ratio[n] for n in names) for c in OPTIMIZERS if c not in names)


def test_did_you_mean_lists_the_sorted_choices_when_none_is_close() -> None:
    assert did_you_mean("zzz", ["b", "a", "c"]) == "; choose one of: a, b, c"
    many = [f"model{i:02d}" for i in range(20)]
    hint = did_you_mean("qqqqqqqqq", many)
    assert hint == "; choose one of: " + ", ".join(sorted(many)[:12]) + ", ..."


def test_unknown_name_is_a_one_line_cnnkit_error() -> None:
    err = unknown_name("optimizer", "sgdd", OPTIMIZERS)
    assert isinstance(err, CnnkitError) and err.exit_code == 2
    assert str(err).startswith("unknown optimizer 'sgdd'; did you mean 'sgd'")
    assert "\n" not in str(err)
    assert str(unknown_name("task", "x", ("detect",))) == "unknown task 'x'; choose one of: detect"


def test_brief_shown_and_listed_keep_user_data_to_one_short_line() -> None:
    from cnnkit.errors import brief, listed, shown

    bomb: list = ["lol"] * 9
    for _ in range(8):
        bomb = [bomb] * 9  # 9^9 strings once expanded: brief never expands it
    assert len(brief(bomb)) < 200 and len(brief("x" * 10_000)) < 80 and brief("a\nb") == "'a\\nb'"
    assert shown("/data/a.png") == "/data/a.png" and shown("/data/a\nb.png") == "'/data/a\\nb.png'"
    assert len(shown("x" * 5000)) < 80
    assert listed(["path", "label"]) == "path,label" and listed(["pa\nth", "x"]) == "'pa\\nth',x"
    assert listed(map(str, range(20)), limit=3) == "0,1,2,..."
    assert str(unknown_name("config key", 1, ["data", "train"])) == "unknown config key 1; choose one of: data, train"
