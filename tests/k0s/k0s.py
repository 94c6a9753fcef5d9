"""Entry point of the k0s test double. The per-version wrappers in bin/ run this file with the
path they were started as and the k0s command line."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from k0s_double.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
