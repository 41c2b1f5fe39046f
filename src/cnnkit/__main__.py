"""`python -m cnnkit` is the `cnnkit` command."""
from cnnkit.cli.main import main

raise SystemExit(main())
