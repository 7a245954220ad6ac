"""``python -m aisp_trl.serve [flags]``: the same as ``aisp-trl serve``."""

from .cli import main

if __name__ == "__main__":
    main(prog="python -m aisp_trl.serve")
