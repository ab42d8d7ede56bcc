"""The real TensorBoard over a logdir, read the way its web page reads it.

`serve(logdir)` starts the `tensorboard` program of this interpreter
(`python -m tensorboard.main`) on 127.0.0.1 with a port the OS picks, waits
until it answers and stops it on exit (SIGTERM to its process group, SIGKILL
if it is still there a few seconds later). The readers ask its HTTP API what
the dashboards show: the runs and their scalar tags, the HParams
experiment and sessions, the profile plugin's traced runs. TensorBoard loads
event files in the background, so `wait_for` polls a reader until the data
is there. `screenshot` renders a dashboard with headless Chromium.

Only 127.0.0.1 is ever contacted. This module imports neither TensorFlow
nor absl's flags (the server process imports TensorFlow).
"""

import contextlib
import dataclasses
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from tf_lbsgd import launch

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 120.0
REQUEST_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DASHBOARDS = ("scalars", "hparams", "timeseries", "profile")
# The curves train/ and validation/ share: they overlay in one chart each.
DEFAULT_TAG_FILTER = "^(loss|top1_error)$"
# All statuses, as TensorBoard's HParams dashboard asks for them.
SESSION_STATUSES = ("STATUS_FAILURE", "STATUS_RUNNING", "STATUS_SUCCESS",
                    "STATUS_UNKNOWN")
_SERVING_LINE = re.compile(r"TensorBoard \S+ at (http://[^/\s]+:(\d+))/")
_POLL_SECONDS = 0.2
_TAIL_CHARS = 3000


class TensorBoardError(RuntimeError):
    """TensorBoard did not start, answered with an error, or did not show
    the expected data in time."""


@dataclasses.dataclass(frozen=True)
class Server:
    """A running TensorBoard: `url` ("http://127.0.0.1:<port>"), `port`,
    `logdir`, the `process` and the file of its output, `log_path`."""

    url: str
    port: int
    logdir: str
    process: subprocess.Popen
    log_path: str

    def log_tail(self, chars=_TAIL_CHARS):
        """The last `chars` characters of the server's stderr and stdout."""
        return _tail(self.log_path, chars)


def _tail(path, chars):
    with open(path, "rb") as log:
        log.seek(0, os.SEEK_END)
        log.seek(max(0, log.tell() - chars))
        return log.read().decode(errors="replace")


def tensorboard_command(logdir, extra_args=()):
    """The command line of a TensorBoard over `logdir` on 127.0.0.1, port 0
    (the OS picks a free one; the server prints its URL)."""
    return [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}",
            f"--host={HOST}", "--port=0", *extra_args]


def _stop(process, grace_seconds=STOP_GRACE_SECONDS):
    """SIGTERM to the process group of `process`, SIGKILL after
    `grace_seconds`; waits until it has exited."""
    for signum, wait_seconds in ((signal.SIGTERM, grace_seconds),
                                 (signal.SIGKILL, grace_seconds)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)  # Its own group: start_new_session.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait_seconds)
    # A helper left in the group (TensorBoard's data server) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _wait_for_url(process, log_path, timeout_seconds):
    """Returns (url, port) from the serving line TensorBoard prints, once it
    answers a request; raises TensorBoardError if it exits or is silent."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TensorBoardError(
                f"tensorboard exited ({launch.describe_exit(process.returncode)}"
                f") before serving; its output ends with:\n"
                f"{_tail(log_path, _TAIL_CHARS)}")
        found = _SERVING_LINE.search(_tail(log_path, 1 << 20))
        if found:
            url, port = found.group(1), int(found.group(2))
            with contextlib.suppress(OSError, TensorBoardError):
                get_json(url, "/data/environment", timeout_seconds=5)
                return url, port
        time.sleep(_POLL_SECONDS)
    raise TensorBoardError(
        f"tensorboard did not answer within {timeout_seconds:g} s; its "
        f"output ends with:\n{_tail(log_path, _TAIL_CHARS)}")


@contextlib.contextmanager
def serve(logdir, extra_args=(), start_timeout_seconds=START_TIMEOUT_SECONDS):
    """Runs TensorBoard over `logdir` for the duration of the `with` block.

    Args:
        logdir: the directory TensorBoard reads (a model_dir, or a directory
            of model_dirs).
        extra_args: more tensorboard flags, e.g. ("--reload_interval=1",).
        start_timeout_seconds: how long to wait until it answers.

    Yields:
        The `Server`.

    Raises:
        FileNotFoundError: if `logdir` is not a directory.
        TensorBoardError: if it exits or does not answer in time (with the
            end of its output).
    """
    if not os.path.isdir(logdir):
        raise FileNotFoundError(f"TensorBoard's logdir {logdir!r} is not a "
                                f"directory; train a run into it first")
    work_dir = tempfile.mkdtemp(prefix="tensorboard-")
    log_path = os.path.join(work_dir, "output.log")
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                tensorboard_command(logdir, extra_args),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        try:
            url, port = _wait_for_url(process, log_path, start_timeout_seconds)
            yield Server(url, port, logdir, process, log_path)
        finally:
            _stop(process)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def port_is_open(port, host=HOST):
    """Whether something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) == 0


def _check_local(url):
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"only a TensorBoard on http://{HOST}:<port> is read, "
                         f"got {url!r}")


def get_json(url, path, body=None, timeout_seconds=REQUEST_TIMEOUT_SECONDS):
    """The JSON answer of TensorBoard at `url` to GET `path`, or to POST
    `body` as JSON (as the HParams dashboard does).

    Raises:
        ValueError: for a URL that is not on 127.0.0.1.
        TensorBoardError: for an HTTP error status (with its text).
        OSError: if nothing answers.
    """
    _check_local(url)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data,
        headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as reply:
            content = reply.read()
            if reply.headers.get("Content-Encoding") == "gzip":
                content = gzip.decompress(content)  # The profile plugin's.
            return json.loads(content.decode())
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")[:500]
        raise TensorBoardError(f"{'POST' if data else 'GET'} {path} answered "
                               f"HTTP {error.code}: {text}") from error


def runs(url):
    """The run names (directories with event files, relative to logdir)."""
    return get_json(url, "/data/runs")


def plugins(url):
    """{plugin name: listing}, `enabled` true for those with data."""
    return get_json(url, "/data/plugins_listing")


def scalar_tags(url):
    """{run: sorted scalar tags} of the scalars dashboard."""
    tags = get_json(url, "/data/plugin/scalars/tags")
    return {run: sorted(run_tags) for run, run_tags in tags.items()}


def scalars(url, run, tag):
    """[(step, value)] of one scalar time series."""
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    points = get_json(url, f"/data/plugin/scalars/scalars?{query}")
    return [(step, value) for _, step, value in points]


def hparams_experiment(url, hparams_limit=1000):
    """The HParams experiment: `hparamInfos` (name, type, domain) and
    `metricInfos` (name: {group: run, tag})."""
    return get_json(url, "/data/plugin/hparams/experiment",
                    {"experimentName": "", "hparamsLimit": hparams_limit,
                     "includeMetrics": True})


def hparams_session_groups(url, hparam_names=()):
    """The HParams sessions, grouped as the dashboard's table shows them:
    `sessionGroups` [{name, hparams: {name: value}, metricValues,
    sessions}], and `totalSize`."""
    return get_json(url, "/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": list(SESSION_STATUSES),
        "colParams": [{"hparam": name, "includeInResult": True}
                      for name in hparam_names],
        "startIndex": 0, "sliceSize": 1000000, "includeMetrics": True})


def profile_runs(url):
    """The profile plugin's runs: one "<tensorboard run>/<trace dir>" name
    per trace (e.g. "train/2026_01_31_12_00_00"), newest first."""
    return get_json(url, "/data/plugin/profile/runs")


def wait_for(read, ready, timeout_seconds=60.0, what="the data"):
    """Calls `read()` until `ready(value)` is true; returns that value.

    TensorBoard reads event files in a background thread after it starts, so
    its first answers may be empty.

    Raises:
        TensorBoardError: after `timeout_seconds`, with the last value read.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = read()
        if ready(value):
            return value
        if time.monotonic() > deadline:
            raise TensorBoardError(f"TensorBoard did not show {what} within "
                                   f"{timeout_seconds:g} s; last answer: "
                                   f"{value!r}")
        time.sleep(_POLL_SECONDS)


def find_chromium():
    """The path of a Chromium (or Chrome) on PATH.

    Raises:
        FileNotFoundError: naming the install command if there is none.
    """
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(
        f"no headless browser found (looked for {', '.join(CHROMIUM_NAMES)} "
        f"on PATH); install one with `apt-get install chromium`")


def screenshot(page_url, output_path, window_size=(1400, 900),
               render_seconds=20.0, browser=None):
    """Saves a PNG of `page_url` as headless Chromium renders it.

    Args:
        page_url: the page (a TensorBoard dashboard on 127.0.0.1).
        output_path: the PNG to write.
        window_size: (width, height) of the page in pixels.
        render_seconds: the page's virtual time before the capture (the
            dashboards fetch and draw their data in this time).
        browser: the browser's path; None for `find_chromium()`.

    Raises:
        FileNotFoundError: if there is no browser.
        TensorBoardError: if the browser fails or writes no PNG.
    """
    _check_local(page_url)
    browser = browser or find_chromium()
    output_path = os.path.abspath(output_path)
    with contextlib.suppress(FileNotFoundError):
        os.remove(output_path)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile_dir:
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu",
            "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={profile_dir}",
            f"--window-size={window_size[0]},{window_size[1]}",
            f"--virtual-time-budget={int(render_seconds * 1000)}",
            f"--screenshot={output_path}", page_url]
        with tempfile.TemporaryFile() as output:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=output,
                                       start_new_session=True)
            try:
                process.wait(timeout=render_seconds * 3 + 60)
            except subprocess.TimeoutExpired:
                pass  # Reported below, as no PNG.
            finally:
                _stop(process)
            output.seek(0)
            text = output.read().decode(errors="replace")[-_TAIL_CHARS:]
    if process.returncode != 0 or not os.path.isfile(output_path):
        raise TensorBoardError(
            f"{os.path.basename(browser)} wrote no screenshot of {page_url} "
            f"({launch.describe_exit(process.returncode)}); its output ends "
            f"with:\n{text}")
    return output_path


def dashboard_url(server_url, dashboard="scalars", tag_filter=None,
                  smoothing=None):
    """The URL of one dashboard of TensorBoard at `server_url`.

    Args:
        server_url: "http://127.0.0.1:<port>".
        dashboard: one of DASHBOARDS.
        tag_filter: the scalars dashboard's tag regex (its charts of the
            matching tags come first, side by side).
        smoothing: the scalars dashboard's smoothing weight in [0, 1) (0:
            the raw values).

    Raises:
        ValueError: for an unknown dashboard.
    """
    if dashboard not in DASHBOARDS:
        raise ValueError(f"dashboard must be one of {DASHBOARDS}, got "
                         f"{dashboard!r}")
    settings = {}
    if tag_filter:
        settings["tagFilter"] = tag_filter
    if smoothing is not None:
        settings["_smoothingWeight"] = f"{smoothing:g}"
    fragment = "&".join([dashboard] + [
        f"{key}={urllib.parse.quote(value, safe='')}"
        for key, value in settings.items()])
    return f"{server_url}/#{fragment}"


def _has_data(server, dashboard):
    """Whether `dashboard` has something to draw yet."""
    if dashboard == "hparams":
        return bool(hparams_session_groups(server.url)["sessionGroups"])
    if dashboard == "profile":
        return bool(profile_runs(server.url))
    return bool(scalar_tags(server.url))


def capture_dashboard(logdir, output_path, dashboard="scalars",
                      tag_filter=DEFAULT_TAG_FILTER, smoothing=0.0,
                      window_size=(1400, 900), render_seconds=20.0,
                      load_timeout_seconds=60.0):
    """Starts TensorBoard over `logdir` and saves a PNG of one dashboard.

    Args:
        logdir: a model_dir, or a directory of model_dirs.
        output_path: the PNG to write.
        dashboard: one of DASHBOARDS.
        tag_filter, smoothing: see `dashboard_url` (scalars only).
        window_size, render_seconds: see `screenshot`.
        load_timeout_seconds: how long to wait for TensorBoard to load the
            dashboard's data before the capture.

    Returns:
        The PNG's path.

    Raises:
        FileNotFoundError: no logdir, or no browser (naming the install
            command).
        TensorBoardError: the server or the browser failed, or the
            dashboard had no data in time.
    """
    browser = find_chromium()  # Before the server: fail fast.
    with serve(logdir) as server:
        wait_for(lambda: _has_data(server, dashboard), bool,
                 load_timeout_seconds, f"data for the {dashboard} dashboard")
        if dashboard != "scalars":
            tag_filter = smoothing = None
        return screenshot(
            dashboard_url(server.url, dashboard, tag_filter, smoothing),
            output_path, window_size, render_seconds, browser)
