"""``python -m soundcl.complexity`` (a published command): runs :func:`soundcl.ondevice.complexity.main`."""
import logging
import sys

from soundcl.ondevice.complexity import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main(sys.argv[1:])
