"""``python -m gccs_core``: the command line (see gccs_core/cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
