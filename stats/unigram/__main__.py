"""python -m stats.unigram: the step functions live in the package's modules, so a Ray worker can load them."""

import sys

from corpora.exits import run_command
from stats.unigram.cli import main


sys.exit(run_command("", main))
