"""`python tools/launch_local.py` in a source checkout: the same command as
the `tf-lbsgd-launch-local` console script (tf_lbsgd/scripts/launch_local.py,
where its flags and usage are)."""

from tf_lbsgd.scripts import launch_local

if __name__ == "__main__":
    launch_local.run()
