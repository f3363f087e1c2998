"""``python -m duplus.cli`` (as ``torchrun -m duplus.cli`` runs it)."""

import sys

from duplus.cli import main

sys.exit(main())
