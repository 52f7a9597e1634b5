"""``python -m suite``: the same as the ``perceiver-suite`` command."""

import sys

from suite.cli import main

if __name__ == "__main__":  # grain's worker processes re-import __main__: run nothing then
    sys.exit(main())
