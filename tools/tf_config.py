"""`python tools/tf_config.py` in a source checkout: the same command as the
`tf-lbsgd-tf-config` console script (tf_lbsgd/scripts/tf_config.py, where
its flags and usage are)."""

from tf_lbsgd.scripts import tf_config

if __name__ == "__main__":
    tf_config.run()
