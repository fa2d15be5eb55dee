import sys

from sparsecode.cli import main

sys.exit(main())
