import sys

from dialogtune.cli import main

sys.exit(main())
