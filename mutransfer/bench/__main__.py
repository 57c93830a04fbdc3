import sys

from mutransfer.bench import main

sys.exit(main())
