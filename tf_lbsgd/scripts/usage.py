"""--help for the console scripts, however they are started.

absl's --help lists the flags of the main module, and prints its docstring as
the usage. A console script's main module is the wrapper pip generates (a
tools/ script's, a thin wrapper), which has neither; `adopt_as_main` gives
them those of the module that defines the flags.
"""

import sys

from absl import app
from absl import flags

_HELP_FLAGS = ("-h", "--help", "--helpshort")


def adopt_as_main(usage, flag_holders):
    """Makes `usage` and `flag_holders` the main module's, for --help.

    Args:
        usage: The text printed before the flags (a module docstring).
        flag_holders: The `flags.FlagHolder`s that --help lists.
    """
    sys.modules["__main__"].__doc__ = usage
    for holder in flag_holders:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0],
                                                 flags.FLAGS[holder.name])


def exit_if_help(options):
    """Prints the usage and exits 0 when `options` ask for help.

    -h, --help and --helpshort list the main module's flags, --helpfull all
    flags (absl's own handling exits 1).

    Args:
        options: The command-line arguments before any "--".
    """
    if set(_HELP_FLAGS) & set(options):
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    if "--helpfull" in options:
        app.usage(writeto_stdout=True, exitcode=0)
