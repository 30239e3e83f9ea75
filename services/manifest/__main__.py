"""``python -m contrast.manifest``: one manifest-service replica (flags: see ``contrast.runtime``)."""

import sys

from contrast.manifest.service import SERVICE
from contrast.runtime import main

if __name__ == "__main__":
    sys.exit(main(SERVICE))
