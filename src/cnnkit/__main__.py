"""`python -m cnnkit` is the `cnnkit` command."""
from cnnkit.cli import main

raise SystemExit(main())
