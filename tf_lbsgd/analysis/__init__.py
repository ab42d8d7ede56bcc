"""TensorFlow-free analysis: pure Python over numbers and files.

Run outputs, TensorBoard event files, tables, the machine's description, the
recipe's arithmetic, the communication model, the scaling planner and the
reproduction package (`reproduction/`: its grid, runner and report) live here,
so that tools and reports that only read and compute never start TensorFlow
(tests/test_analysis.py checks that importing any module of this package, and
`tools/reproduce.py --dry_run`, does not import it).
"""
