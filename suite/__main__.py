"""``python -m suite``: the same as the ``perceiver-suite`` command."""

import sys

from suite.cli import main

sys.exit(main())
