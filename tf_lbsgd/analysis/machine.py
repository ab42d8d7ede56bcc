"""What numbers were measured on, without importing TensorFlow.

The installed versions come from the packages' metadata, so a report or a
benchmark can name TensorFlow's version without starting it. The CPU's
bfloat16 units come from its flags in /proc/cpuinfo: with AMX (`amx_bf16`
and `amx_tile`, Intel Sapphire Rapids and later) or `avx512_bf16` oneDNN runs
bfloat16 matmuls and convolutions natively; without them TensorFlow emulates
bfloat16 (converting to float32), so bfloat16 cannot be faster than float32.
"""

import datetime
import importlib.metadata
import os
import platform

# Distributions that install the `tensorflow` module, the usual one first.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu",
                            "tensorflow-macos", "tf-nightly")
NOT_INSTALLED = "not installed"
# The cpuinfo flags that decide how bfloat16 runs, fastest first.
BFLOAT16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")
NATIVE_AMX = "native bfloat16 (AMX)"
NATIVE_AVX512_BF16 = "native bfloat16 (AVX512_BF16, no AMX)"
EMULATED = "emulated bfloat16 (no AMX/AVX512_BF16)"
UNKNOWN = "bfloat16 support unknown (no x86 CPU flags)"


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
    for line in read_cpuinfo(cpuinfo_path).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo_text):
    """The flags of the first processor in the text of /proc/cpuinfo.

    Args:
        cpuinfo_text: the file's text (x86 Linux: a `flags : ...` line per
            processor).

    Returns:
        The set of flag names; empty if the text has no `flags` line.
    """
    for line in cpuinfo_text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return set(value.split())
    return set()


def bfloat16_capability(cpuinfo_text):
    """How this CPU runs bfloat16, from the flags in its cpuinfo text.

    Args:
        cpuinfo_text: the text of /proc/cpuinfo.

    Returns:
        {"verdict": one line (`NATIVE_AMX`, `NATIVE_AVX512_BF16`, `EMULATED`
        or `UNKNOWN`), "native": bool, "flags": {flag: bool for each of
        `BFLOAT16_FLAGS`}}.
    """
    flags = cpu_flags(cpuinfo_text)
    present = {flag: flag in flags for flag in BFLOAT16_FLAGS}
    if present["amx_bf16"] and present["amx_tile"]:
        verdict = NATIVE_AMX
    elif present["avx512_bf16"]:
        verdict = NATIVE_AVX512_BF16
    elif flags:
        verdict = EMULATED
    else:
        verdict = UNKNOWN
    return {"verdict": verdict,
            "native": verdict in (NATIVE_AMX, NATIVE_AVX512_BF16),
            "flags": present}


def describe_bfloat16(capability):
    """One line: the verdict and which of `BFLOAT16_FLAGS` the CPU has."""
    have = [flag for flag, on in capability["flags"].items() if on]
    flags = ", ".join(have) if have else "none of " + ", ".join(
        BFLOAT16_FLAGS)
    return f"{capability['verdict']}; flags: {flags}"


def read_cpuinfo(cpuinfo_path="/proc/cpuinfo"):
    """The text of `cpuinfo_path`; empty where there is no such file."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as cpuinfo:
            return cpuinfo.read()
    except OSError:
        return ""


def machine_info():
    """The CPU model, cores, versions and the UTC time, as a dict.

    Returns:
        {"cpu", "cores", "bfloat16", "tensorflow", "keras", "python",
        "date"}: strings but `cores` (an int); `bfloat16` is the verdict of
        `bfloat16_capability`; the versions are the installed packages'.
    """
    return {
        "cpu": cpu_model(),
        "bfloat16": bfloat16_capability(read_cpuinfo())["verdict"],
        "cores": os.cpu_count(),
        "tensorflow": installed_version(*TENSORFLOW_DISTRIBUTIONS),
        "keras": installed_version("keras"),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
    }
