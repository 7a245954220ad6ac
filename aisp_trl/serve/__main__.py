"""``python -m aisp_trl.serve [flags]``: the same as ``aisp-trl serve [flags]``."""

import sys

from ..cli import main

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]])
