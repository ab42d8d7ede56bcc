"""TensorBoard event files, read without TensorFlow.

An event file is a TFRecord file: each record is, little-endian,

    uint64 length | uint32 masked CRC-32C of length | data | uint32 masked CRC-32C of data

and each record's data a serialised `Event` (tensorboard's protos, which need
no TensorFlow). Both checksums are verified. A last record cut short (a run
killed while writing) ends the file, as in TensorBoard; TensorFlow's
`summary_iterator` raises DataLossError there instead.
"""

import glob
import os
import struct

import numpy as np
from tensorboard.compat.proto import event_pb2

EVENT_FILE_PATTERN = "events.out.tfevents.*"
_HEADER = struct.Struct("<QI")  # length, masked CRC of the length's 8 bytes.
_FOOTER = struct.Struct("<I")  # masked CRC of the data.
_CRC32C_POLYNOMIAL = 0x82F63B78  # Castagnoli, bit-reversed.
_MASK_DELTA = 0xA282EAD8


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC32C_POLYNOMIAL if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """The CRC-32C (Castagnoli) of `data` (bytes), as an unsigned int."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    """The TFRecord checksum of `data`: its CRC-32C rotated and offset."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path):
    """Yields the data of each record of the TFRecord file `path`.

    Stops, without an error, at a last record cut short.

    Raises:
        ValueError: naming `path` and the record's byte offset when a
            checksum does not match (the file was damaged).
    """
    with open(path, "rb") as f:
        offset = 0
        while True:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return  # The end, or a header cut short.
            length, length_crc = _HEADER.unpack(header)
            if masked_crc32c(header[:8]) != length_crc:
                raise ValueError(f"{path}: the record at byte {offset} is "
                                 f"corrupt (its length's checksum differs)")
            body = f.read(length + _FOOTER.size)
            if len(body) < length + _FOOTER.size:
                return  # Cut short while it was written.
            data = body[:length]
            if masked_crc32c(data) != _FOOTER.unpack(body[length:])[0]:
                raise ValueError(f"{path}: the record at byte {offset} is "
                                 f"corrupt (its data's checksum differs)")
            yield data
            offset += _HEADER.size + len(body)


def read_events(path):
    """Yields the `Event` protos of the event file `path` (see read_records)."""
    for data in read_records(path):
        yield event_pb2.Event.FromString(data)


# TensorProto's DataType -> (numpy dtype, the repeated field of its values).
_TENSOR_TYPES = {1: (np.float32, "float_val"), 2: (np.float64, "double_val"),
                 3: (np.int32, "int_val"), 9: (np.int64, "int64_val")}


def scalar_value(value):
    """The number in a `Summary.Value`: tf.summary.scalar's or a TF1 one.

    Raises:
        ValueError: naming the tag when the value is not a single float or
            integer.
    """
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    tensor = value.tensor
    if kind != "tensor" or tensor.dtype not in _TENSOR_TYPES:
        raise ValueError(f"summary {value.tag!r} is not a float or integer "
                         f"scalar ({kind}, dtype {tensor.dtype})")
    dtype, field = _TENSOR_TYPES[tensor.dtype]
    values = (np.frombuffer(tensor.tensor_content, dtype=np.dtype(dtype)
                            .newbyteorder("<"))
              if tensor.tensor_content else getattr(tensor, field))
    if len(values) != 1:
        raise ValueError(f"summary {value.tag!r} holds {len(values)} "
                         f"values, not one")
    return float(values[0])


def read_scalars(directory, tag):
    """{step: value} of summary `tag` in the event files of `directory`.

    Files are read in name order (their names start with the time they were
    created), so a resumed run's later write for a step wins.

    Raises:
        ValueError: for a damaged file (read_records) or a `tag` that is not
            a scalar (scalar_value).
    """
    by_step = {}
    for path in sorted(glob.glob(os.path.join(directory, EVENT_FILE_PATTERN))):
        for event in read_events(path):
            for value in event.summary.value:
                if value.tag == tag:
                    by_step[event.step] = scalar_value(value)
    return by_step
