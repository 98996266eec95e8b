import sys

from simplan.cli import main

sys.exit(main())
