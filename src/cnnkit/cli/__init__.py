"""The command line: `cnnkit VERB ...` (cnnkit.cli.app.main; the parser in cnnkit.cli.parser, the verbs in
cnnkit.cli.verbs). Importing it loads no torch."""
from cnnkit.cli.app import main

__all__ = ["main"]
