"""`python -m hamtools …` behaves like the zipapp called as `hamtools`."""

import sys

from hamtools.multicall import main

sys.exit(main())
