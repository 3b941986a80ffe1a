"""``python -m privaudit``: the CLI (`privaudit.cli.main`), running the code of the current
directory's checkout even when the shared environment's console script points at another one."""

import sys

from privaudit.cli import main

sys.exit(main())
