"""``python -m steerpipe_presets NAME [--dry-run | --print] [-S key=value ...]``: see presets.py."""

import sys

from steerpipe_presets.presets import main

sys.exit(main())
