"""``python -m tgvoice_bridge`` = ``tg-bridge``."""
import sys

from .cli import main

sys.exit(main())
