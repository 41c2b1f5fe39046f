"""`python -m cnnkit` is the `cnnkit` command."""
from cnnkit.cli.app import main

raise SystemExit(main())
