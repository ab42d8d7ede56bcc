"""XLA or not for this processor: `jit_compile = 'auto'` (issue 19).

Whether compiling each replica's forward and backward pass with XLA pays
depends on the processor, and the two CPUs this project runs on disagree
(`tools/bench_train_step.py`, ours with and without XLA, same run):

- CPUs without bfloat16 units (AMD EPYC, AVX2; 2026-12-02): XLA is faster.
  Default small model, kn = 256 on 8 replicas: 146 vs 213 ms/step in
  float32, 171 vs 2061 in mixed_bfloat16; ResNet-50 batch 16: 5.74 vs
  5.76 s in float32, 6.7 vs 51 s in mixed_bfloat16 (TensorFlow's emulated
  bfloat16 backward convolutions are what XLA replaces).
- CPUs with AMX / AVX512_BF16 (Intel Xeon; issue 19's figures): XLA is
  no faster or slower. Small model 117 vs 121 ms/step idle and 180 vs
  145 loaded; ResNet-50 in float32 at half speed (oneDNN's kernels, which
  TensorFlow uses without XLA, are the fast path there).

So 'auto' looks the choice up from the CPU's flags (`analysis.machine`),
and takes XLA on GPUs and TPUs (not measured here).
"""

from tf_lbsgd.analysis import machine

AUTO = "auto"

_BY_CPU = {
    machine.EMULATED: (True, "a CPU without bfloat16 units, where XLA "
                             "measured faster"),
    machine.NATIVE_AMX: (False, "a CPU with AMX, where XLA measured no "
                                "faster than oneDNN"),
    machine.NATIVE_AVX512_BF16: (False, "a CPU with AVX512_BF16, where XLA "
                                        "measured no faster than oneDNN"),
    machine.UNKNOWN: (False, "a CPU of unknown flags: TensorFlow's default"),
}


def choose_jit_compile(setting, accelerators=(), cpuinfo_text=None,
                       where="train_lib.run."):
    """Resolves a `jit_compile` setting to a bool and says why.

    Args:
        setting: True, False or 'auto'.
        accelerators: the device types of the local accelerators (e.g.
            ["GPU"]); empty on a CPU-only host.
        cpuinfo_text: /proc/cpuinfo's text; None to read this host's.
        where: the prefix of the setting's name in the error message.

    Returns:
        (jit_compile, reason): the choice and one line saying why.

    Raises:
        ValueError: for a setting other than True, False or 'auto'.
    """
    if isinstance(setting, bool):
        return setting, f"set: jit_compile = {setting}"
    if setting != AUTO:
        raise ValueError(f"{where}jit_compile must be True, False or "
                         f"'{AUTO}', got {setting!r}")
    if accelerators:
        return True, f"auto: {accelerators[0]} (XLA's home; not measured here)"
    if cpuinfo_text is None:
        cpuinfo_text = machine.read_cpuinfo()
    verdict = machine.bfloat16_capability(cpuinfo_text)["verdict"]
    choice, why = _BY_CPU[verdict]
    return choice, f"auto: {why}"


def local_accelerators():
    """The types of this host's GPUs and TPUs, e.g. ["GPU"]."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return sorted({device.device_type for kind in ("GPU", "TPU")
                   for device in tf.config.list_physical_devices(kind)})
