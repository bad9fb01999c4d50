"""``python -m gccs_core.study``: the study's command line (see main.py)."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
