"""``python -m metapose.cli``: the console entry point, as under torchrun."""

import sys

from metapose.cli import main

sys.exit(main())
