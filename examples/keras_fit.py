"""The recipe's pieces in plain Keras: compile, fit on k replicas, save, load.

    python examples/keras_fit.py --model_path=runs/keras_fit.keras

`model.fit` under a MirroredStrategy of k replicas with the paper's
optimizer (`tf_lbsgd.MomentumSGD`: momentum SGD with L2 decay of the weight
matrices only), its schedule (`GradualWarmup` into `CosineDecay`, the rate
scaled linearly with kn by `linear_scaling_rule`) and per-worker batch
normalisation (`WorkerBatchNorm`, with `SyncReplicaStatistics` making the
replicas' moving statistics one model after training). Keras averages the loss over the global
batch and sums the replicas' gradients, which is the paper's loss / kn
(R8). The saved `.keras` file loads back without `custom_objects`.
"""

import argparse

import tf_lbsgd


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_path", default="runs/keras_fit.keras")
    parser.add_argument("--replicas", type=int, default=4, help="k")
    parser.add_argument("--global_batch_size", type=int, default=512,
                        help="kn")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train_examples", type=int, default=60000)
    parser.add_argument("--test_examples", type=int, default=10000)
    return parser.parse_args()


def main():
    args = parse_args()
    strategy = tf_lbsgd.build_strategy("mirrored",
                                       num_replicas=args.replicas)
    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    from tf_lbsgd.data import fashion_mnist  # pylint: disable=import-outside-toplevel

    def load(split, count):
        images, labels = fashion_mnist.load_fashion_mnist(split=split)
        images = (images[:count, ..., None] / 255.0 - 0.286) / 0.353
        return images.astype("float32"), labels[:count]

    x_train, y_train = load("train", args.train_examples)
    x_test, y_test = load("test", args.test_examples)
    steps_per_epoch = len(y_train) / args.global_batch_size
    peak = tf_lbsgd.linear_scaling_rule(args.global_batch_size, base_lr=0.4)
    schedule = tf_lbsgd.GradualWarmup(
        tf_lbsgd.CosineDecay(peak, steps_per_epoch, args.epochs),
        start_lr=min(0.4, peak), warmup_epochs=1,
        steps_per_epoch=steps_per_epoch)
    with strategy.scope():
        images = keras.Input(x_train.shape[1:])
        x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(images)
        x = keras.layers.ReLU()(tf_lbsgd.WorkerBatchNorm()(x))
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Conv2D(64, 3, padding="same", use_bias=False)(x)
        x = keras.layers.ReLU()(tf_lbsgd.WorkerBatchNorm()(x))
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(images, keras.layers.Dense(10)(x))
        model.compile(
            optimizer=tf_lbsgd.MomentumSGD(schedule, momentum=0.9,
                                           l2_weight_decay=1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"])
    # Each replica's BN moving statistics become their average at the end
    # (and before any validation): the model a checkpoint or save holds.
    model.fit(x_train, y_train, batch_size=args.global_batch_size,
              epochs=args.epochs, verbose=2,
              callbacks=[tf_lbsgd.SyncReplicaStatistics()])
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    model.save(args.model_path)
    loaded = keras.models.load_model(args.model_path)  # No custom_objects.
    same = np.allclose(loaded.predict(x_test[:256], verbose=0),
                       model.predict(x_test[:256], verbose=0), atol=1e-5)
    print(f"top-1 accuracy {accuracy:.4f}; saved to {args.model_path}; "
          f"reloaded model predicts the same: {same}")


if __name__ == "__main__":
    main()
