"""ImageNet preprocessing (R13, R14; docs/paper.md) from Model Garden ops.

`official.vision.ops.preprocess_ops`, combined as in its classification
parser (`official/vision/dataloaders/classification_input.py`):

- training: the JPEG is decoded only inside a random crop of 8%..100% of the
  area and aspect ratio 3/4..4/3 (`random_crop_image_v2`, i.e.
  `decode_and_crop_jpeg`; if no crop is found, the centre crop of
  `center_crop_image_v2`), flipped left-right at random, resized to
  `image_size` x `image_size` and normalised per channel with the Model
  Garden's ImageNet `MEAN_RGB` / `STDDEV_RGB`;
- evaluation: the image is decoded, its shorter side resized to
  `image_size * 256 / 224` (256 for 224) and the central `image_size` x
  `image_size` square cropped, then normalised the same way.

Both raise at run time on bytes that do not decode; a fused crop decode only
reads the rows it crops, so a JPEG without its end-of-image marker (a
truncated file) is also test-decoded at its last pixel.
"""

import tensorflow as tf
from official.vision.ops import preprocess_ops

# R14: the shorter side is resized to 256 for a 224 crop.
EVAL_RESIZE_RATIO = 256 / 224
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
_JPEG_END_MARKER = b"\xff\xd9"


def eval_resize_size(image_size):
    """Returns the shorter side before the centre crop: 256 for 224 (R14)."""
    return int(round(image_size * EVAL_RESIZE_RATIO))


def normalize(image):
    """Per-channel normalisation with the Model Garden's ImageNet statistics.

    Args:
        image: float [..., 3] image in pixel units (0..255).

    Returns:
        float32 (image - MEAN_RGB) / STDDEV_RGB.
    """
    return preprocess_ops.normalize_image(
        tf.cast(image, tf.float32), offset=preprocess_ops.MEAN_RGB,
        scale=preprocess_ops.STDDEV_RGB)


def _check_jpeg_complete(image_bytes, image_shape):
    """Returns True if the JPEG decodes to its end, else raises.

    Files that end with the end-of-image marker pass; the others (such as
    truncated files) are decoded at their last pixel, which needs the whole
    entropy-coded data and fails if it is missing.
    """
    def decode_last_pixel():
        window = tf.stack([image_shape[0] - 1, image_shape[1] - 1, 1, 1])
        pixel = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
        return tf.size(pixel) > 0

    has_end = tf.equal(tf.strings.substr(image_bytes, -2, 2), _JPEG_END_MARKER)
    return tf.cond(has_end, lambda: tf.constant(True), decode_last_pixel)


def _random_crop_jpeg(image_bytes, seed):
    """Decodes a JPEG inside a random crop (Model Garden fused decode)."""
    image_shape = tf.image.extract_jpeg_shape(image_bytes)
    complete = _check_jpeg_complete(image_bytes, image_shape)
    crop = preprocess_ops.random_crop_image_v2(
        image_bytes, image_shape, aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
        area_range=CROP_AREA_RANGE, seed=seed)
    whole = tf.reduce_all(tf.equal(tf.shape(crop), image_shape))
    image = tf.cond(
        whole,
        lambda: preprocess_ops.center_crop_image_v2(image_bytes, image_shape),
        lambda: crop)
    with tf.control_dependencies([complete]):
        return tf.identity(image)


def _random_crop_other(image_bytes, seed):
    """Decodes a non-JPEG image (e.g. PNG), then crops it at random."""
    image = tf.io.decode_image(image_bytes, channels=3,
                               expand_animations=False)
    crop = preprocess_ops.random_crop_image(
        image, aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
        area_range=CROP_AREA_RANGE, seed=seed)
    whole = tf.reduce_all(tf.equal(tf.shape(crop), tf.shape(image)))
    return tf.cond(whole, lambda: preprocess_ops.center_crop_image(image),
                   lambda: crop)


def preprocess_train(image_bytes, image_size, seed=1):
    """Training preprocessing (R13): random crop, flip, resize, normalise.

    Args:
        image_bytes: Scalar string tensor, the encoded image.
        image_size: Side S of the square output.
        seed: Op-level seed of the random crop and flip.

    Returns:
        float32 [S, S, 3] normalised image. Raises (at run time) an
        `InvalidArgumentError` if the bytes do not decode.
    """
    image = tf.cond(tf.io.is_jpeg(image_bytes),
                    lambda: _random_crop_jpeg(image_bytes, seed),
                    lambda: _random_crop_other(image_bytes, seed))
    image, _, _ = preprocess_ops.random_horizontal_flip(image, seed=seed)
    image = tf.image.resize(image, [image_size, image_size])
    image.set_shape([image_size, image_size, 3])
    return normalize(image)


def preprocess_eval(image_bytes, image_size):
    """Evaluation preprocessing (R14): shorter side to S*256/224, centre crop S.

    Args:
        image_bytes: Scalar string tensor, the encoded image.
        image_size: Side S of the square output.

    Returns:
        float32 [S, S, 3] normalised image. Raises (at run time) an
        `InvalidArgumentError` if the bytes do not decode.
    """
    image = tf.io.decode_image(image_bytes, channels=3,
                               expand_animations=False)
    image, _ = preprocess_ops.resize_image(image, eval_resize_size(image_size))
    shape = tf.shape(image)
    image = tf.image.crop_to_bounding_box(
        image, (shape[0] - image_size) // 2, (shape[1] - image_size) // 2,
        image_size, image_size)
    image.set_shape([image_size, image_size, 3])
    return normalize(image)
