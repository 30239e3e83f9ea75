"""``python -m contrast.ca``: one CA replica (they share one durable consumer on ``VERDICTS``)."""

import sys

from contrast.ca.service import make_service
from contrast.runtime import main

if __name__ == "__main__":
    sys.exit(main(make_service))  # a malformed Coordinator pin in the environment: exit 2
