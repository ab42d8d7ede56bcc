"""TensorFlow-free analysis: pure Python over numbers and files.

Run outputs, tables, the communication model, the scaling planner and the
reproduction's grid and report live here, so that tools and reports that only
read and compute never start TensorFlow (tests/test_analysis.py checks that
importing any module of this package does not import it).
"""
