import sys

from mutransfer.cli import main

sys.exit(main())
