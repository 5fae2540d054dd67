"""``python -m imdsfs`` is the ``imdsfs`` command."""

import sys

from ._cli import main

sys.exit(main())
