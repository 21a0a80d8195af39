import sys

from dxlab.cli import main

sys.exit(main())
