"""Your own Keras CNN and in-memory data, trained with the whole recipe.

    python examples/own_cnn.py --model_dir=runs/own_cnn

A 4-layer CNN of plain Keras layers (with the recipe's per-worker batch
normalisation, `tf_lbsgd.WorkerBatchNorm`) learns Fashion-MNIST held in numpy
arrays, on k simulated workers (logical CPU devices; GPUs when present) with
global batch kn, the linearly scaled rate and gradual warmup. The run writes
checkpoints, TensorBoard events, metrics.json and a SavedModel to model_dir;
run it again and it resumes.
"""

import argparse

import tf_lbsgd


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default="runs/own_cnn")
    parser.add_argument("--replicas", type=int, default=4, help="k")
    parser.add_argument("--global_batch_size", type=int, default=512,
                        help="kn")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--train_examples", type=int, default=60000,
                        help="use the first this many training images")
    parser.add_argument("--test_examples", type=int, default=10000,
                        help="evaluate on the first this many test images")
    return parser.parse_args()


def cnn(input_shape, num_classes):
    """conv-BN-ReLU x2, pool, conv-BN-ReLU, global pool, dense logits."""
    import keras  # pylint: disable=import-outside-toplevel

    def conv_bn_relu(x, filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        return keras.layers.ReLU()(tf_lbsgd.WorkerBatchNorm()(x))

    images = keras.Input(input_shape)
    x = conv_bn_relu(images, 16)
    x = keras.layers.MaxPooling2D()(conv_bn_relu(x, 32))
    x = keras.layers.GlobalAveragePooling2D()(conv_bn_relu(x, 64))
    return keras.Model(images, keras.layers.Dense(num_classes)(x))


def main():
    args = parse_args()
    # The strategy first: it splits the CPU into k devices, which TensorFlow
    # allows only before anything else runs.
    strategy = tf_lbsgd.build_strategy("mirrored",
                                       num_replicas=args.replicas)
    from tf_lbsgd.data import fashion_mnist  # pylint: disable=import-outside-toplevel
    x_train, y_train = fashion_mnist.load_fashion_mnist(split="train")
    x_test, y_test = fashion_mnist.load_fashion_mnist(split="test")
    x_train, y_train = (x_train[:args.train_examples],
                        y_train[:args.train_examples])
    x_test, y_test = x_test[:args.test_examples], y_test[:args.test_examples]
    scale = lambda x: (x[..., None] / 255.0 - 0.286) / 0.353  # noqa: E731
    recipe = tf_lbsgd.Recipe(
        epochs=args.epochs, global_batch_size=args.global_batch_size,
        base_lr=0.4, base_batch_size=256,  # 0.4 per 256 images, scaled (R1)
        warmup="gradual", warmup_epochs=1,  # from 0.4 to the scaled rate (R2)
        decay="cosine", steps_per_loop=10)
    result = tf_lbsgd.train(
        cnn, (scale(x_train).astype("float32"), y_train), args.model_dir,
        eval_data=(scale(x_test).astype("float32"), y_test), num_classes=10,
        strategy=strategy, recipe=recipe)
    print(f"top-1 accuracy {result.metrics['eval']['top1_accuracy']:.4f} "
          f"after {result.metrics['global_step']} steps of kn = "
          f"{result.metrics['global_batch_size']} on "
          f"{result.metrics['num_replicas']} replicas; "
          f"SavedModel: {result.export_path}")


if __name__ == "__main__":
    main()
