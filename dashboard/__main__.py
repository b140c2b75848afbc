"""``python -m dashboard``: the same as the ``tickscope`` command."""

import sys

from dashboard.cli import main

sys.exit(main())
