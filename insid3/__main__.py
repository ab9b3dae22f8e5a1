"""``python -m insid3``: the ``insid3`` command."""

import sys

from insid3.cli import main

sys.exit(main())
