"""The command line: `cnnkit VERB ...` (cnnkit.cli.app)."""
from cnnkit.cli.app import main

__all__ = ["main"]
