"""`python -m trainer ...` (and `torchrun -m trainer train ...`)."""

import os
import signal
import sys

from common import procs

if "TORCHELASTIC_RUN_ID" in os.environ:
    # Under torchrun a rank must not outlive its agent (kill -9 of torchrun, an OOM kill):
    # nothing else would stop it, and the next torchrun would run beside it. SIGKILL, not
    # a stop at a step boundary: the kernel signals once for each of the dying agent's
    # threads, and the trainer takes a second SIGTERM as "stop now" anyway. The run
    # resumes from its last checkpoint, as after any kill. Set before the heavy imports.
    procs.die_with_parent(signal.SIGKILL)
    if os.getppid() == 1:
        sys.exit("trainer: torchrun (this rank's parent) is gone; not starting")

from trainer.cli import main  # noqa: E402 -- after the parent-death signal, see above

sys.exit(main())
