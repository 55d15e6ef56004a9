"""`python -m trainer ...` (and `torchrun -m trainer train ...`)."""

import sys

from trainer.cli import main

sys.exit(main())
