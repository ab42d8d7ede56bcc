"""SLURM hostlist expressions, expanded as `scontrol show hostnames` does.

A hostlist (SLURM_JOB_NODELIST, `sbatch --nodelist`) is a list of host
expressions separated by commas or whitespace outside brackets:

    login1,gpu[01-03,07],rack[1-2]-node[01-02],node[1-2]-ib

Each bracket group holds comma-separated numbers and ascending ranges
`first-last`; a number is zero-padded to the width of the number written
first in its range (`n[8-10]` is n8 n9 n10, `n[08-10]` is n08 n09 n10).
Text may come before, between and after the groups (a suffix after the
last group needs SLURM 23.02.5 or later). A host expression with several
groups names every combination of their values, in the order of SLURM's
hostlist_create(): the last group varies fastest; with two groups the first
varies slowest (rack1-node01 rack1-node02 rack2-node01 rack2-node02); with
three or more, SLURM's recursion over the earlier groups makes the
next-to-last group the slowest and the first group the second fastest
(a[1-2]b[1-2]c[1-2] is a1b1c1 a1b1c2 a2b1c1 a2b1c2 a1b2c1 ...). Hosts are
kept in the order written, with repeats, as SLURM keeps them.

This module imports neither TensorFlow nor Keras, so tools that only need
host names stay fast.
"""

import itertools
import math
import re

# SLURM's own limit on the hosts one range may name (MAX_RANGE, 64K): beyond
# it an expression is a typo (n[0-99999999]), not a cluster.
MAX_HOSTS_PER_EXPRESSION = 64 * 1024

_SEPARATORS = frozenset(", \t\n")
_GROUP = re.compile(r"\[([^\[\]]*)\]")
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def expand(nodelist):
    """Expands a SLURM hostlist into its host names, in SLURM's order.

    Args:
        nodelist: a hostlist such as "login1,gpu[01-03,07]" (the value of
            SLURM_JOB_NODELIST).

    Returns:
        The host names, e.g. ["login1", "gpu01", "gpu02", "gpu03", "gpu07"].

    Raises:
        ValueError: naming the hostlist and the offending host expression
            for an empty hostlist, unbalanced or nested brackets, an empty
            bracket group or list item, a range item that is not a number or
            `first-last` of numbers, a descending range such as [5-3], or an
            expression naming more than MAX_HOSTS_PER_EXPRESSION hosts.
    """
    hosts = []
    for expression in _split_expressions(nodelist):
        try:
            hosts.extend(_expand_expression(expression))
        except ValueError as e:
            raise ValueError(f"bad SLURM hostlist {nodelist!r}: "
                             f"{e}") from None
    if not hosts:
        raise ValueError(f"SLURM hostlist {nodelist!r} names no host")
    return hosts


def _split_expressions(nodelist):
    """Splits at commas and whitespace that are outside brackets."""
    expressions, current, depth = [], [], 0
    for char in nodelist:
        if char in _SEPARATORS and depth == 0:
            expressions.append("".join(current))
            current = []
            continue
        depth += {"[": 1, "]": -1}.get(char, 0)
        current.append(char)
    expressions.append("".join(current))
    return [expression for expression in expressions if expression]


def _expand_expression(expression):
    """Host names of one host expression such as 'rack[1-2]-node[01-02]'."""
    pieces = _GROUP.split(expression)
    texts, groups = pieces[0::2], pieces[1::2]
    if any("[" in text or "]" in text for text in texts):
        raise ValueError(f"unbalanced or nested brackets in {expression!r}")
    values = [_group_values(group, expression) for group in groups]
    count = math.prod(len(group_values) for group_values in values)
    if count > MAX_HOSTS_PER_EXPRESSION:
        raise ValueError(f"{expression!r} names {count} hosts, more than "
                         f"{MAX_HOSTS_PER_EXPRESSION}")
    order = _slurm_loop_order(len(groups))
    hosts = []
    for combination in itertools.product(*(values[i] for i in order)):
        chosen = dict(zip(order, combination))
        hosts.append(texts[0] + "".join(
            chosen[i] + texts[i + 1] for i in range(len(groups))))
    return hosts


def _slurm_loop_order(group_count):
    """Group indices from slowest to fastest varying, as SLURM nests them.

    SLURM loops over the last group innermost and recurses over the others
    from the next-to-last (outermost) back to the first.
    """
    if group_count == 0:
        return []
    return list(range(group_count - 2, -1, -1)) + [group_count - 1]


def _group_values(group, expression):
    """The zero-padded numbers of one bracket group, e.g. '08-10,12'."""
    numbers = []
    for item in group.split(","):
        if not item:
            raise ValueError(f"empty range in [{group}] of {expression!r}")
        match = _RANGE.fullmatch(item)
        if not match:
            raise ValueError(f"{item!r} in {expression!r} is not a number "
                             f"or a range first-last of numbers")
        first, last = match.group(1), match.group(2) or match.group(1)
        if int(first) > int(last):
            raise ValueError(f"descending range {item!r} in {expression!r}: "
                             f"write it {last}-{first}")
        if len(numbers) + int(last) - int(first) >= MAX_HOSTS_PER_EXPRESSION:
            raise ValueError(f"[{group}] of {expression!r} names more than "
                             f"{MAX_HOSTS_PER_EXPRESSION} numbers")
        numbers.extend(f"{number:0{len(first)}d}"
                       for number in range(int(first), int(last) + 1))
    return numbers
