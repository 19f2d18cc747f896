"""``python -m asyncfl`` is the ``asyncfl`` command."""

import sys

from asyncfl.cli import main

sys.exit(main())
