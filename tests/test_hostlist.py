"""tf_lbsgd.hostlist: SLURM hostlist expressions, as `scontrol show hostnames`.

The expected host lists follow SLURM's documentation (scontrol(1)
`show hostnames`, slurm.conf(5) node range expressions, including
"rack[0-63]_blade[0-41]") and were checked against `scontrol show hostnames`
of SLURM 22.05, except the suffix cases (node[1-2]-ib), which SLURM accepts
from 23.02.5 on.
"""

import subprocess
import sys

import pytest

from tf_lbsgd import hostlist


@pytest.mark.parametrize("nodelist,hosts", [
    # scontrol(1): "tux[1-3]" is mapped to "tux1","tux2" and "tux3".
    ("tux[1-3]", ["tux1", "tux2", "tux3"]),
    ("login1", ["login1"]),
    ("alpha,beta,gamma", ["alpha", "beta", "gamma"]),
    # Zero padding: the width of the first number of each range.
    ("node[001-003]", ["node001", "node002", "node003"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("n[08-10]", ["n08", "n09", "n10"]),
    ("n[1-010]", ["n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9",
                  "n10"]),
    # Comma lists inside brackets, kept in the order written.
    ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
    ("lx[15,18,32-33]", ["lx15", "lx18", "lx32", "lx33"]),
    ("x[3,1-2]", ["x3", "x1", "x2"]),
    # Several groups: every combination, the first group slowest.
    ("rack[1-2]-node[01-02]",
     ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"]),
    ("rack[0-1]_blade[0-1,9]",
     ["rack0_blade0", "rack0_blade1", "rack0_blade9",
      "rack1_blade0", "rack1_blade1", "rack1_blade9"]),
    # Three or four groups: SLURM's recursion order (last group fastest,
    # then the first, ..., the next-to-last slowest).
    ("a[1-2]b[1-2]c[1-2]",
     ["a1b1c1", "a1b1c2", "a2b1c1", "a2b1c2",
      "a1b2c1", "a1b2c2", "a2b2c1", "a2b2c2"]),
    ("a[1-2]b[1-2]c[1-2]d[1-2]",
     ["a1b1c1d1", "a1b1c1d2", "a2b1c1d1", "a2b1c1d2",
      "a1b2c1d1", "a1b2c1d2", "a2b2c1d1", "a2b2c1d2",
      "a1b1c2d1", "a1b1c2d2", "a2b1c2d1", "a2b1c2d2",
      "a1b2c2d1", "a1b2c2d2", "a2b2c2d1", "a2b2c2d2"]),
    # Top-level commas split, commas inside brackets do not.
    ("login1,gpu[01-02],rack[1-2]-node[01-02]",
     ["login1", "gpu01", "gpu02", "rack1-node01", "rack1-node02",
      "rack2-node01", "rack2-node02"]),
    ("gpu[01-03,07],login1", ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]),
    # Whitespace separates too; empty items are skipped, as SLURM does.
    ("gpu[01-02] login1\tlogin2", ["gpu01", "gpu02", "login1", "login2"]),
    ("a,,b", ["a", "b"]),
    # Suffixes after a group (SLURM 23.02.5 and later).
    ("node[1-2]-ib", ["node1-ib", "node2-ib"]),
    ("rack[1-2]-node[1-2].ib",
     ["rack1-node1.ib", "rack1-node2.ib", "rack2-node1.ib",
      "rack2-node2.ib"]),
    # A bare group; repeats are kept.
    ("[1-2]", ["1", "2"]),
    ("n1,n[1-2]", ["n1", "n1", "n2"]),
])
def test_expand(nodelist, hosts):
    assert hostlist.expand(nodelist) == hosts


# SLURM rejects these too, except n[1-2 (it prints "n]"), n1-2] (one host),
# n[1-] (n1) and n[1, 3] (n1 n03), which no SLURM job's node list holds:
# here they are errors rather than guesses.
@pytest.mark.parametrize("nodelist,message", [
    ("n[1-2", r"unbalanced or nested brackets in 'n\[1-2'"),
    ("n1-2]", r"unbalanced or nested brackets in 'n1-2\]'"),
    ("ok,n[[1]]", r"unbalanced or nested brackets in 'n\[\[1\]\]'"),
    ("n[]", r"empty range in \[\] of 'n\[\]'"),
    ("n[1,]", r"empty range in \[1,\] of 'n\[1,\]'"),
    ("n[5-3]", r"descending range '5-3' in 'n\[5-3\]': write it 3-5"),
    ("n[a-b]", r"'a-b' in 'n\[a-b\]' is not a number or a range"),
    ("n[1-]", r"'1-' in 'n\[1-\]' is not a number"),
    ("n[-1]", r"'-1' in 'n\[-1\]' is not a number"),
    ("n[1, 3]", r"' 3' in 'n\[1, 3\]' is not a number"),
    ("n[0-70000]", r"more than 65536 numbers"),
    ("a[0-300]b[0-300]", r"names 90601 hosts, more than 65536"),
])
def test_malformed_hostlist_names_the_expression(nodelist, message):
    with pytest.raises(ValueError, match=message) as error:
        hostlist.expand(nodelist)
    assert f"bad SLURM hostlist {nodelist!r}" in str(error.value)


@pytest.mark.parametrize("nodelist", ["", " , "])
def test_hostlist_without_hosts(nodelist):
    with pytest.raises(ValueError, match="names no host"):
        hostlist.expand(nodelist)


def test_it_and_its_users_import_no_tensorflow():
    # cluster (TF_CONFIG, checked by the CLI before TensorFlow loads) and
    # launch (tools/launch_local.py) too.
    code = ("import sys; from tf_lbsgd import cluster, hostlist, launch; "
            "hostlist.expand('n[1-2]'); "
            "print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('tensorflow', 'keras', 'absl')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
