"""Finding and parsing gin files; importing every gin-registered module."""

import contextlib
import importlib.resources
import inspect
import logging
import os

import gin

# Importing these registers their configurables with gin.
from tf_lbsgd import distribute  # noqa: F401  pylint: disable=unused-import
from tf_lbsgd import lamb  # noqa: F401  pylint: disable=unused-import
from tf_lbsgd import lars  # noqa: F401  pylint: disable=unused-import
from tf_lbsgd import optimizers  # noqa: F401  pylint: disable=unused-import
from tf_lbsgd import schedules  # noqa: F401  pylint: disable=unused-import
from tf_lbsgd import train_lib  # noqa: F401  pylint: disable=unused-import
from tf_lbsgd.data import fashion_mnist  # noqa: F401  pylint: disable=unused-import
from tf_lbsgd.data import imagenet  # noqa: F401  pylint: disable=unused-import
from tf_lbsgd.data import imagenet_tfrecord  # noqa: F401  pylint: disable=unused-import
from tf_lbsgd.models import resnet_cifar  # noqa: F401  pylint: disable=unused-import
from tf_lbsgd.models import resnet_imagenet  # noqa: F401  pylint: disable=unused-import


# An installed package holds the repository's top-level gin/ here (setup.py
# maps it into the wheel); a source checkout, editable install or Bazel's
# runfiles have gin/ beside the package directory instead.
PACKAGED_GIN_DIR = "gin_configs"


def gin_dirs():
    """Directories searched for gin files named without a path.

    Returns:
        [the package's gin_configs/] in an installed wheel (pip install,
        --user, --target), else [the gin/ beside the package directory] (a
        source checkout, an editable install, Bazel's runfiles).
    """
    package = importlib.resources.files(__package__)
    packaged = package.joinpath(PACKAGED_GIN_DIR)
    if packaged.is_dir():
        return [str(packaged)]
    return [os.path.join(os.path.dirname(str(package)), "gin")]


def resolve_gin_file(name):
    """Returns the path of gin file `name` (a path, or a name under gin/).

    Raises:
        FileNotFoundError: listing where it looked.
    """
    candidates = [name] + [os.path.join(d, name) for d in gin_dirs()]
    if not name.endswith(".gin"):
        candidates += [c + ".gin" for c in candidates]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"gin file {name!r} not found; looked at "
                            f"{', '.join(candidates)}")


class _DropGinSearchMisses(logging.Filter):
    """Hides gin's 'Path not found' while it tries each search path."""

    def filter(self, record):
        return not str(record.msg).startswith("Path not found")


@contextlib.contextmanager
def _quiet_gin_search():
    logger = logging.getLogger()  # gin logs through the root logger.
    noise = _DropGinSearchMisses()
    logger.addFilter(noise)
    try:
        yield
    finally:
        logger.removeFilter(noise)


def parse(gin_files, gin_bindings=None):
    """Parses gin files then bindings; errors name the offending binding.

    Raises:
        FileNotFoundError: for a gin file that does not exist.
        ValueError: for an unknown configurable or parameter, or bad syntax.
    """
    paths = [resolve_gin_file(f) for f in gin_files or []]
    for directory in gin_dirs():
        if os.path.isdir(directory):
            gin.add_config_file_search_path(directory)
    try:
        with _quiet_gin_search():
            gin.parse_config_files_and_bindings(paths, gin_bindings or [],
                                                finalize_config=False)
    except ValueError as e:
        raise ValueError(f"bad gin configuration: {e}") from e
    except Exception as e:  # gin raises several parser error types.
        raise ValueError(f"bad gin configuration: {type(e).__name__}: "
                         f"{e}") from e


def unbound_required(configurable):
    """The `gin.REQUIRED` parameters of `configurable` that no binding sets.

    Calling it would fail with gin's terse "Required bindings ... not
    provided"; checking first lets the caller say which file is missing.

    Args:
        configurable: a function decorated with `gin.configurable`.

    Returns:
        Their bindings' names, e.g. ['train_lib.run.data'], in the order of
        the signature; [] when every one is bound.
    """
    selector = (f"{configurable.__module__.rsplit('.', 1)[-1]}."
                f"{configurable.__name__}")
    missing = []
    for name, parameter in inspect.signature(configurable).parameters.items():
        if parameter.default is not gin.REQUIRED:
            continue
        try:
            gin.query_parameter(f"{selector}.{name}")
        except ValueError:  # "has no value bound for parameter"
            missing.append(f"{selector}.{name}")
    return missing
