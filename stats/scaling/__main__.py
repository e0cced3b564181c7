"""python -m stats.scaling (the library lives in the package's modules)."""

import sys

from corpora.exits import run_command
from stats.scaling.cli import main

sys.exit(run_command("", main))
