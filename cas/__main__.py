"""`python -m cas` is the `cas` command."""

import sys

from cas.cli import main

sys.exit(main())
