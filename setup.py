"""tf_lbsgd: large-minibatch synchronous SGD (Goyal et al., 2017) for TF/Keras."""

import glob
import os

from setuptools import find_packages
from setuptools import setup


def _gin_data_files():
    """Installs gin/**.gin under <prefix>/share/tf_lbsgd/gin/."""
    groups = {}
    for path in glob.glob("gin/**/*.gin", recursive=True):
        target = os.path.join("share", "tf_lbsgd", os.path.dirname(path))
        groups.setdefault(target, []).append(path)
    return sorted(groups.items())


setup(
    name="tf_lbsgd",
    version="0.1.0",
    description=("Accurate, large-minibatch synchronous SGD (Goyal et al. "
                 "2017) for TensorFlow/Keras: linear scaling, gradual warmup, "
                 "multi-worker training."),
    packages=find_packages(include=["tf_lbsgd", "tf_lbsgd.*"]),
    data_files=_gin_data_files(),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow~=2.20.0",
        "keras>=3.10",
        "tf-models-official==2.20.0",
        "tensorflow-datasets",
        "importlib_resources",
        "absl-py",
        "gin-config",
    ],
    extras_require={"test": ["pytest", "pytest-xdist", "pyyaml"]},
    entry_points={"console_scripts": ["tf-lbsgd = tf_lbsgd.cli:run"]},
)
