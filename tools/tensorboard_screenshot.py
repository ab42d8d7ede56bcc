"""Saves a PNG of a TensorBoard dashboard over a run's model_dir.

    python tools/tensorboard_screenshot.py --logdir=runs/fashion_mnist \\
        --output=docs/tensorboard_scalars.png
    python tools/tensorboard_screenshot.py --logdir=runs/fashion_mnist \\
        --dashboard=hparams --output=docs/tensorboard_hparams.png

Starts the real TensorBoard on 127.0.0.1 (a free port), waits until it has
loaded the dashboard's data, renders the page with headless Chromium
(`apt-get install chromium`) and stops the server
(`tf_lbsgd.tensorboard_server.capture_dashboard`). The scalars dashboard
shows the tags matching --tag_filter first, one chart per tag, with the
train and validation curves overlaid.
"""

import sys

from absl import app
from absl import flags

from tf_lbsgd import tensorboard_server

_LOGDIR = flags.DEFINE_string("logdir", None, "A model_dir, or a directory "
                              "of model_dirs.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "The PNG to write.",
                              required=True)
_DASHBOARD = flags.DEFINE_enum("dashboard", "scalars",
                               tensorboard_server.DASHBOARDS,
                               "The dashboard to capture.")
_TAG_FILTER = flags.DEFINE_string(
    "tag_filter", tensorboard_server.DEFAULT_TAG_FILTER,
    "Scalars dashboard: the tags shown first (a regex; empty for none).")
_SMOOTHING = flags.DEFINE_float("smoothing", 0.0, "Scalars dashboard: the "
                                "smoothing weight (0: the raw values).",
                                lower_bound=0.0, upper_bound=0.99)
_WINDOW_SIZE = flags.DEFINE_list("window_size", ["1400", "900"],
                                 "width,height of the page in pixels.")
_RENDER_SECONDS = flags.DEFINE_float(
    "render_seconds", 20.0, "The page's (virtual) time to fetch and draw its "
    "data before the capture.", lower_bound=1.0)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        width, height = (int(size) for size in _WINDOW_SIZE.value)
    except ValueError as e:
        raise app.UsageError(f"--window_size must be width,height in pixels, "
                             f"got {','.join(_WINDOW_SIZE.value)}") from e
    try:
        path = tensorboard_server.capture_dashboard(
            _LOGDIR.value, _OUTPUT.value, dashboard=_DASHBOARD.value,
            tag_filter=_TAG_FILTER.value, smoothing=_SMOOTHING.value,
            window_size=(width, height),
            render_seconds=_RENDER_SECONDS.value)
    except (OSError, tensorboard_server.TensorBoardError) as e:
        print(f"tensorboard_screenshot: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    app.run(main)
