"""`python -m digitnet` runs the command-line interface."""
from digitnet.cli import main

raise SystemExit(main())
