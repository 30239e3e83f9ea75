"""``python -m contrast.verifier``: one verifier replica (run N of them; they share one durable consumer)."""

import sys

from contrast.runtime import main
from contrast.verifier.service import make_service

if __name__ == "__main__":
    sys.exit(main(make_service))  # a malformed Coordinator pin in the environment: exit 2
