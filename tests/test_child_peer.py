"""tf_lbsgd.benchmarks.child_peer: a peer timed in a process of its own."""

import sys

import pytest

from tf_lbsgd.benchmarks import child_peer

_SERVING_CHILD = (
    "import sys\n"
    "from tf_lbsgd.benchmarks import child_peer\n"
    "print('a line the parent ignores', flush=True)\n"
    "runs = []\n"
    "def runner():\n"
    "    runs.append(1)\n"
    "    return 0.25 * len(runs)\n"
    "child_peer.serve(runner, sys.stdin, lambda l: print(l, flush=True))\n"
    "sys.exit(7 if len(runs) == 2 else 8)\n")


def test_serve_answers_each_time_line_until_the_input_ends():
    written, runs = [], []
    child_peer.serve(lambda: runs.append(1) or 1.5 * len(runs),
                     iter(["time\n", "time\n"]), written.append)
    assert written == [child_peer.READY, f"{child_peer.SECONDS}1.5",
                       f"{child_peer.SECONDS}3.0"]


def test_serve_stops_at_any_other_line():
    written = []
    child_peer.serve(lambda: 1.0, iter(["quit\n", "time\n"]), written.append)
    assert written == [child_peer.READY]


def test_child_is_timed_per_call_and_ends_with_its_input():
    peer = child_peer.ChildPeer([sys.executable, "-c", _SERVING_CHILD])
    assert [peer(), peer()] == [0.25, 0.5]
    process = peer._process  # pylint: disable=protected-access
    peer.close()
    assert process.returncode == 7  # It ran twice, then saw the end.


def test_a_child_that_dies_is_an_error_with_its_stderr():
    command = [sys.executable, "-c",
               "import sys; sys.stderr.write('no such peer'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"(?s)benchmark peer process "
                       r"exited \(3\) before answering: .*no such peer"):
        child_peer.ChildPeer(command)
