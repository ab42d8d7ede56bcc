"""Command-line spelling shared by the absl tools (no flags defined or read)."""


def dashes_to_underscores(argv):
    """Returns `argv` with flag names such as "--train-per-class" spelt with
    underscores ("--train_per_class"), as absl defines them.

    Args:
        argv: Command-line arguments, e.g. `sys.argv`.

    Returns:
        A new list: each "--name[=value]" argument with the dashes of `name`
        replaced; other arguments, values and a bare "--" are unchanged.
    """
    fixed = []
    for arg in argv:
        if arg.startswith("--") and "-" in arg.split("=")[0][2:]:
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        fixed.append(arg)
    return fixed
