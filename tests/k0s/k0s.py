"""Entry point of the k0s test double. The per-version wrappers in bin/ run this file with the
path they were started as and the k0s command line."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if sys.flags.no_site:
    # The wrappers start Python with -S, which skips the start-up work of the site module (it
    # reads every .pth file) on each of the many k0s runs; PyYAML still comes from site-packages.
    import site

    sys.path.extend(path for path in site.getsitepackages() if path not in sys.path)

from k0s_double.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
