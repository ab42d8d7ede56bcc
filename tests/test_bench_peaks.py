"""tf_lbsgd.benchmarks.peaks and the CPU's bfloat16 units
(analysis.machine): cpuinfo parsing, the kernels' FLOP against TensorFlow's
own count, the GFLOP/s arithmetic and the peaks table."""

import time

import pytest
import tensorflow as tf

from tf_lbsgd.analysis import machine
from tf_lbsgd.benchmarks import peaks

# Abridged /proc/cpuinfo of the two kinds of machine the project runs on.
_XEON_AMX_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 "
    "clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc "
    "rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq "
    "ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c "
    "rdrand hypervisor lahf_lm abm 3dnowprefetch fsgsbase bmi1 hle avx2 smep "
    "bmi2 erms invpcid rtm avx512f avx512dq rdseed adx smap avx512ifma "
    "clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 "
    "xsaves avx_vnni avx512_bf16 wbnoinvd arat avx512vbmi umip pku ospke "
    "waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg "
    "avx512_vpopcntdq rdpid cldemote movdiri movdir64b fsrm md_clear "
    "serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8 arch_capabilities")
XEON_AMX = f"""\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: {_XEON_AMX_FLAGS}

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: {_XEON_AMX_FLAGS}
"""
EPYC_ZEN3 = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat \
pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp \
lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid tsc_known_freq pni \
pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c \
rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse \
3dnowprefetch osvw topoext invpcid_single ssbd ibrs ibpb stibp vmmcall \
fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb \
sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt nrip_save umip \
vaes vpclmulqdq rdpid fsrm
"""
# Zen 4 (Genoa) has AVX512_BF16 but no AMX.
EPYC_ZEN4 = EPYC_ZEN3.replace("fsrm", "fsrm avx512f avx512bw avx512_bf16")


@pytest.mark.parametrize("text, verdict, native, present", [
    (XEON_AMX, machine.NATIVE_AMX, True,
     ["amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2"]),
    (EPYC_ZEN4, machine.NATIVE_AVX512_BF16, True,
     ["avx512_bf16", "avx512f", "avx2"]),
    (EPYC_ZEN3, machine.EMULATED, False, ["avx2"]),
    ("processor\t: 0\nFeatures\t: fp asimd bf16\n", machine.UNKNOWN, False,
     []),
], ids=["xeon_amx", "epyc_zen4", "epyc_zen3", "no_x86_flags"])
def test_bfloat16_capability_from_cpuinfo(text, verdict, native, present):
    capability = machine.bfloat16_capability(text)
    assert capability["verdict"] == verdict
    assert capability["native"] is native
    assert [flag for flag, on in capability["flags"].items() if on] == present


def test_describe_bfloat16_names_the_verdict_and_flags():
    assert machine.describe_bfloat16(machine.bfloat16_capability(
        EPYC_ZEN3)) == "emulated bfloat16 (no AMX/AVX512_BF16); flags: avx2"
    assert machine.describe_bfloat16(machine.bfloat16_capability("")) == (
        f"{machine.UNKNOWN}; flags: none of amx_bf16, amx_tile, avx512_bf16,"
        " avx512f, avx2")


def test_this_machine_reports_its_bfloat16_verdict(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(EPYC_ZEN3)
    assert machine.bfloat16_capability(machine.read_cpuinfo(str(cpuinfo)))[
        "verdict"] == machine.EMULATED
    assert machine.read_cpuinfo(str(tmp_path / "missing")) == ""
    assert machine.machine_info()["bfloat16"] == (
        peaks.cpu_capability()["verdict"])


def _tensorflow_flop(kernel):
    """TensorFlow's own FLOP count (its op registry) of the kernel's graph."""
    graph = kernel.function.get_concrete_function(*kernel.inputs).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=graph,
                                         options=options).total_float_ops


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kernel_flop_match_tensorflows_count(dtype):
    matmul = peaks.matmul_kernel(size=24, dtype=dtype, runs=1)
    assert matmul.flop == 2 * 24 ** 3 == _tensorflow_flop(matmul)
    shape = dict(batch=2, height=7, width=5, channels=3, filters=4, kernel=3)
    conv = peaks.conv_kernel(dtype=dtype, runs=1, **shape)
    assert conv.flop == 2 * 2 * 7 * 5 * 3 * 4 * 9 == _tensorflow_flop(conv)
    assert matmul.inputs[0].dtype == conv.inputs[0].dtype == dtype


def test_gflops_are_the_flop_over_the_median_run():
    kernel = peaks.matmul_kernel(size=64, runs=3)
    start = time.perf_counter()
    measured = kernel.measure()
    elapsed = time.perf_counter() - start
    # The median run lies within the measurement's wall time.
    assert 0 < measured["seconds"] <= elapsed
    assert measured["gflops"] == pytest.approx(
        2 * 64 ** 3 / measured["seconds"] / 1e9)
    assert kernel() > 0
    with pytest.raises(ValueError, match="runs must be a positive integer, "
                                         "got 0"):
        peaks.TimedKernel(tf.reduce_sum, (tf.ones([2]),), 2, runs=0)


def test_peak_kernels_and_their_medians():
    kernels = peaks.peak_kernels(
        ["float32", "bfloat16"], matmul_size=16, runs=1,
        conv_shape=dict(batch=1, height=4, width=4, channels=2, filters=2,
                        kernel=3))
    assert sorted(kernels) == [("conv", "bfloat16"), ("conv", "float32"),
                               ("matmul", "bfloat16"), ("matmul", "float32")]
    assert peaks.median_peaks({("matmul", "float32"): [3.0, 1.0, 2.0],
                               ("conv", "float32"): [5.0]}) == {
        "matmul": {"float32": 2.0}, "conv": {"float32": 5.0}}


def test_peaks_table_says_when_bfloat16_is_emulated():
    measured = {"matmul": {"float32": 271.0, "bfloat16": 1326.0},
                "conv": {"float32": 311.0, "bfloat16": 1726.0}}
    amx = peaks.peaks_table(measured, machine.bfloat16_capability(XEON_AMX))
    assert amx.splitlines()[0] == (
        "CPU bfloat16: native bfloat16 (AMX); flags: amx_bf16, amx_tile, "
        "avx512_bf16, avx512f, avx2")
    assert ("| matmul 2048^3 | 271 | 1326 | 4.89x |" in amx
            and "| conv 3x3, 16x56x56x64 -> 64 | 311 | 1726 | 5.55x |" in amx)
    assert "emulated" not in amx
    epyc = peaks.peaks_table(measured, machine.bfloat16_capability(EPYC_ZEN3),
                             matmul_size=256)
    assert epyc.splitlines()[0].startswith("CPU bfloat16: emulated bfloat16")
    assert "| matmul 256^3 |" in epyc
    assert "bfloat16 is emulated" in epyc.splitlines()[-1]
