"""The benchmarks run by tools/bench_*.py: ours against our peers.

Shared timing, peak and JSON helpers are in `tf_lbsgd.benchmark`.
"""
