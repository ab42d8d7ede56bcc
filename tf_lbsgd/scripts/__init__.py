"""The command lines installed as console scripts besides `tf-lbsgd`.

Like tf_lbsgd/cli.py, these modules define and read absl flags; the rest of
the library does neither. tools/launch_local.py and tools/tf_config.py run
them from a source checkout.
"""
