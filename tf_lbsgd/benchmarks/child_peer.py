"""A benchmark peer in a process of its own, timed round by round.

TensorFlow's thread pools belong to the process: peers that the project runs
with one thread per op (`cpu_threads`) and peers that their users run with
TensorFlow's default threads cannot share one. A `ChildPeer` starts the
other process once (it builds and warms its peer up), then times one run
per call, so `benchmark.interleaved` still measures every peer round by
round in the same run; each process waits idle while the other computes.

The protocol, over the child's stdin and stdout: the child prints `READY`
once built; each `time` line it reads makes it run its peer once and print
`SECONDS <float>`; end of input ends it. Other stdout lines are ignored.
"""

import subprocess
import tempfile

READY = "child_peer: ready"
SECONDS = "child_peer: seconds "
TIME = "time"


def serve(runner, lines, write):
    """The child's side: `READY`, then one timed `runner()` per `time` line.

    Args:
        runner: callable returning a measurement (seconds).
        lines: iterable of input lines (the process's stdin).
        write: callable(str) writing and flushing one output line.
    """
    write(READY)
    for line in lines:
        if line.strip() != TIME:
            return
        write(f"{SECONDS}{float(runner())!r}")


class ChildPeer:
    """The parent's side: a peer's runner in a child process.

    Calling it times one run in the child and returns its measurement.

    Raises:
        RuntimeError: when the child exits or fails before answering, with
            the end of its stderr.
    """

    def __init__(self, command, env=None):
        self.command = list(command)
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(  # pylint: disable=consider-using-with
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True, env=env)
        self._read(READY)

    def _read(self, prefix):
        for line in self._process.stdout:
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        self._process.wait()
        self._stderr.seek(0)
        raise RuntimeError(
            f"benchmark peer process exited ({self._process.returncode}) "
            f"before answering: {' '.join(self.command)}\n"
            f"{self._stderr.read()[-3000:]}")

    def __call__(self):
        self._process.stdin.write(TIME + "\n")
        self._process.stdin.flush()
        return float(self._read(SECONDS))

    def close(self, timeout=60):
        """Ends the child (end of its input; killed if it lingers)."""
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._stderr.close()
