"""``python -m contrast.manifest``: one manifest-service replica (flags: see ``contrast.runtime``)."""

import sys

from contrast.manifest.service import make_service
from contrast.runtime import main

if __name__ == "__main__":
    sys.exit(main(make_service))  # a malformed Coordinator pin in the environment: exit 2
