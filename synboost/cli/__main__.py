"""``python -m synboost.cli ...`` (what ``torchrun -m synboost.cli`` starts): the ``synboost`` command."""
import sys

from synboost.cli import main

sys.exit(main())
