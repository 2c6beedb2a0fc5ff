"""`python -m pyclvp ...`: the same command line as the `pyclvp` entry point (pyclvp/cli.py)."""
import sys

from pyclvp.cli import main

if __name__ == "__main__":
    sys.exit(main())
