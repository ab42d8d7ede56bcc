"""tf_lbsgd: large-minibatch synchronous SGD (Goyal et al., 2017) for TensorFlow/Keras."""

__version__ = "0.1.0"
