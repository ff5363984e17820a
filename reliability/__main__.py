"""``python -m reliability``: run the fault-injection suite and write reliability.md."""
import sys

from . import main

sys.exit(main())
