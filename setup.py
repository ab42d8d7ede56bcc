"""Ships the top-level gin/ inside the package; the metadata is in pyproject.toml.

gin/ stays at the top of the repository (and has no __init__.py: a `gin`
package would shadow the gin-config library), so it is mapped into the
package as `tf_lbsgd.gin_configs`: the wheel holds tf_lbsgd/gin_configs/**.gin,
where tf_lbsgd.config.gin_dirs() finds them in any installation.
"""

from setuptools import find_namespace_packages
from setuptools import find_packages
from setuptools import setup

GIN_SOURCE_DIR = "gin"
GIN_PACKAGE = "tf_lbsgd.gin_configs"


def _gin_packages():
    """gin/ and each of its subdirectories as data packages of GIN_PACKAGE."""
    return [GIN_PACKAGE] + [f"{GIN_PACKAGE}.{name}" for name in
                            find_namespace_packages(where=GIN_SOURCE_DIR)]


setup(
    packages=find_packages(include=["tf_lbsgd", "tf_lbsgd.*"]) +
    _gin_packages(),
    package_dir={GIN_PACKAGE: GIN_SOURCE_DIR},
    package_data={name: ["*.gin"] for name in _gin_packages()},
)
