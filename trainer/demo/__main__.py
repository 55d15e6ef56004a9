"""`python -m trainer.demo` (what `make demo` and docker/trainer-entrypoint.sh run)."""

import sys

from trainer.demo.launcher import main

sys.exit(main())
