"""Measured peaks of this CPU: a matmul and a 3x3 convolution, per dtype.

A convolutional network's train step is mostly convolutions and matmuls
(oneDNN's kernels on an x86 CPU), so their measured GFLOP/s in a dtype is
the practical limit of a step in that precision: a step's GFLOP/s divided
by them is how much of the machine it uses. The CPU's
bfloat16 units (`analysis.machine.bfloat16_capability`) say whether the
bfloat16 peaks can be higher than float32's at all.

Each kernel is traced and run once (warm-up), then timed `runs` times; the
median counts. FLOP are counted as 2 per multiply-add.
"""

import time

import tensorflow as tf

from tf_lbsgd import benchmark
from tf_lbsgd.analysis import machine
from tf_lbsgd.analysis import tables

KERNELS = ("matmul", "conv")
# A 2048^3 matmul; a 3x3 convolution of ResNet-50's first stage at batch
# 16: 56x56x64 to 64 channels, stride 1, SAME padding.
MATMUL_SIZE = 2048
CONV_SHAPE = dict(batch=16, height=56, width=56, channels=64, filters=64,
                  kernel=3)
# The dtype whose kernels a Keras precision policy computes in.
COMPUTE_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16",
                 "mixed_float16": "float16"}


def matmul_flop(size):
    """FLOP of a `size` x `size` by `size` x `size` product."""
    return 2 * size ** 3


def conv_flop(batch, height, width, channels, filters, kernel):
    """FLOP of a stride-1 SAME `kernel` x `kernel` convolution."""
    return 2 * batch * height * width * channels * filters * kernel ** 2


def matmul_label(size=MATMUL_SIZE):
    """The matmul's name in a table, e.g. `matmul 2048^3`."""
    return f"matmul {size}^3"


def conv_label(batch, height, width, channels, filters, kernel):
    """The convolution's name in a table, e.g. `conv 3x3, 16x56x56x64 -> 64`."""
    return (f"conv {kernel}x{kernel}, {batch}x{height}x{width}x{channels} "
            f"-> {filters}")


class TimedKernel:
    """One compiled kernel on fixed inputs; each call measures its GFLOP/s.

    Args:
        function: the kernel, taking `inputs`, returning a scalar (one
            element of its result: the host read is the synchronisation).
        inputs: its input tensors.
        flop: FLOP of one call.
        runs: timed runs per measurement, after the warm-up here.
    """

    def __init__(self, function, inputs, flop, runs=5):
        if int(runs) != runs or runs < 1:
            raise ValueError(f"runs must be a positive integer, got {runs!r}")
        self.function = tf.function(function)
        self.inputs = inputs
        self.flop = flop
        self.runs = int(runs)
        self.function(*inputs).numpy()  # Trace and warm up.

    def measure(self):
        """Times `runs` calls.

        Returns:
            {"seconds": the median call's seconds, "gflops": `flop` over
            them, in GFLOP/s}.
        """
        times = []
        for _ in range(self.runs):
            start = time.perf_counter()
            self.function(*self.inputs).numpy()
            times.append(time.perf_counter() - start)
        seconds = benchmark.median(times)
        return {"seconds": seconds, "gflops": self.flop / seconds / 1e9}

    def __call__(self):
        """GFLOP/s of the median of `runs` calls."""
        return self.measure()["gflops"]


def matmul_kernel(size=MATMUL_SIZE, dtype="float32", runs=5):
    """A `TimedKernel` of a `size`^3 matmul in `dtype`."""
    a = tf.random.stateless_normal([size, size], seed=[1, 2], dtype=dtype)
    b = tf.random.stateless_normal([size, size], seed=[3, 4], dtype=dtype)
    return TimedKernel(lambda x, y: tf.matmul(x, y)[0, 0], (a, b),
                       matmul_flop(size), runs)


def conv_kernel(batch, height, width, channels, filters, kernel,
                dtype="float32", runs=5):
    """A `TimedKernel` of a stride-1 SAME NHWC convolution in `dtype`."""
    images = tf.random.stateless_normal([batch, height, width, channels],
                                        seed=[5, 6], dtype=dtype)
    weights = tf.random.stateless_normal([kernel, kernel, channels, filters],
                                         seed=[7, 8], dtype=dtype)
    return TimedKernel(
        lambda x, w: tf.nn.conv2d(x, w, strides=1, padding="SAME")[0, 0, 0, 0],
        (images, weights),
        conv_flop(batch, height, width, channels, filters, kernel), runs)


def cpu_capability():
    """This machine's `machine.bfloat16_capability` (from /proc/cpuinfo)."""
    return machine.bfloat16_capability(machine.read_cpuinfo())


def peak_kernels(dtypes, matmul_size=MATMUL_SIZE, conv_shape=None, runs=5):
    """Warmed-up kernels of both kinds for each dtype.

    Args:
        dtypes: dtype names, e.g. ("float32", "bfloat16").
        matmul_size: the matmul's side.
        conv_shape: dict of `conv_kernel`'s shape arguments; None for
            `CONV_SHAPE`.
        runs: timed runs per measurement.

    Returns:
        dict (kernel name of `KERNELS`, dtype) -> `TimedKernel`.
    """
    conv_shape = dict(conv_shape or CONV_SHAPE)
    kernels = {}
    for dtype in dtypes:
        kernels["matmul", dtype] = matmul_kernel(matmul_size, dtype, runs)
        kernels["conv", dtype] = conv_kernel(dtype=dtype, runs=runs,
                                             **conv_shape)
    return kernels


def peaks_table(peaks, capability, matmul_size=MATMUL_SIZE, conv_shape=None):
    """The peaks as markdown, with the CPU's bfloat16 line above them.

    Args:
        peaks: dict kernel -> dtype -> GFLOP/s (float32 first).
        capability: `machine.bfloat16_capability`'s dict.
        matmul_size: the matmul's side, for its label.
        conv_shape: the convolution's shape (None for `CONV_SHAPE`).

    Returns:
        Lines: `CPU bfloat16: ...`, the table (a column per dtype and the
        ratio of each 16-bit dtype to float32), and where bfloat16 is
        emulated, a line saying what that means for its numbers.
    """
    conv_shape = dict(conv_shape or CONV_SHAPE)
    dtypes = list(peaks["matmul"])
    others = [dtype for dtype in dtypes if dtype != "float32"]
    header = (["kernel"] + [f"{dtype} GFLOP/s" for dtype in dtypes]
              + [f"{dtype} / float32" for dtype in others])
    labels = {"matmul": matmul_label(matmul_size),
              "conv": conv_label(**conv_shape)}
    rows = [[labels[kernel]] + [peaks[kernel][dtype] for dtype in dtypes]
            + [f"{peaks[kernel][dtype] / peaks[kernel]['float32']:.2f}x"
               for dtype in others]
            for kernel in KERNELS]
    lines = [f"CPU bfloat16: {machine.describe_bfloat16(capability)}", "",
             tables.markdown_table(header, rows)]
    if capability["verdict"] == machine.EMULATED:
        lines += ["", "This CPU has no native bfloat16 (no AMX, no "
                  "AVX512_BF16): bfloat16 is emulated, so its peaks and the "
                  "mixed_bfloat16 steps say nothing about a CPU with AMX."]
    return "\n".join(lines)


def median_peaks(measurements):
    """dict kernel -> dtype -> median GFLOP/s of dict (kernel, dtype) ->
    list of measurements (one per round)."""
    peaks = {kernel: {} for kernel in KERNELS}
    for (kernel, dtype), values in measurements.items():
        peaks[kernel][dtype] = benchmark.median(values)
    return peaks
