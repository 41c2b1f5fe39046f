"""`cnnkit VERB ...`: argv → config → cnnkit.api.<verb>(). No training logic lives here.

cli/parser.py builds the argparse parser (no torch: `--help` is instant), cli/verbs.py holds one handler per verb
(importing cnnkit.api after parsing), cli/output.py the printing of results; this module is `main`."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings

from cnnkit.cli.parser import build_parser
from cnnkit.errors import CnnkitError

__all__ = ["build_parser", "main", "run"]


def run(a: argparse.Namespace) -> int:
    """Run the verb of parsed arguments `a` (see cnnkit.cli.verbs); its exit code."""
    from cnnkit.cli.verbs import run as run_verb

    return run_verb(a)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _shutdown_distributed() -> None:
    """Leave the process group, if training joined one (torch.distributed is only loaded by then)."""
    if "cnnkit.engine.distributed" in sys.modules:
        sys.modules["cnnkit.engine.distributed"].shutdown_distributed()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    warnings.showwarning = _show_warning
    try:
        return run(args)
    except CnnkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cnnkit models | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    finally:
        _shutdown_distributed()
