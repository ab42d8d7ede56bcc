"""`python -m tf_lbsgd` runs the command line."""

from tf_lbsgd.cli import run

run()
