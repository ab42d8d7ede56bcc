"""What numbers were measured on, without importing TensorFlow.

The installed versions come from the packages' metadata, so a report or a
benchmark can name TensorFlow's version without starting it.
"""

import datetime
import importlib.metadata
import os
import platform

# Distributions that install the `tensorflow` module, the usual one first.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu",
                            "tensorflow-macos", "tf-nightly")
NOT_INSTALLED = "not installed"


def installed_version(*distributions):
    """The version of the first of `distributions` installed, or
    `NOT_INSTALLED`."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return NOT_INSTALLED


def cpu_model(cpuinfo_path="/proc/cpuinfo"):
    """The CPU's model name (Linux's cpuinfo), else what `platform` knows."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info():
    """The CPU model, cores, versions and the UTC time, as a dict.

    Returns:
        {"cpu", "cores", "tensorflow", "keras", "python", "date"}: strings
        but `cores` (an int); the versions are the installed packages'.
    """
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "tensorflow": installed_version(*TENSORFLOW_DISTRIBUTIONS),
        "keras": installed_version("keras"),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
    }
