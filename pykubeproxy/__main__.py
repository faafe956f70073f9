"""`python -m pykubeproxy`."""

import sys

from pykubeproxy.cli import main

sys.exit(main())
