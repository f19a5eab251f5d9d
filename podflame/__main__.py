import sys

from podflame.cli import main

sys.exit(main())
