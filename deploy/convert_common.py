"""Shared pieces of the component converters: the error type and safetensors reading."""
import json
import os
import struct

import numpy as np


class ConvertError(Exception):
    """A problem with the input, reported to the user as one line."""


_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": "bf16", "F64": np.float64,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
              "BOOL": np.bool_}


def read_safetensors_header(path):
    """Returns (header dict without __metadata__, data start offset)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ConvertError("%s: too short for a safetensors file" % path)
            (n,) = struct.unpack("<Q", raw)
            size = os.fstat(f.fileno()).st_size
            if n > size - 8 or n > 100 << 20:
                raise ConvertError("%s: header length %d does not fit the file" % (path, n))
            header = json.loads(f.read(n))
    except OSError as e:
        raise ConvertError("%s: %s" % (path, e.strerror))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConvertError("%s: header is not valid JSON (%s)" % (path, e))
    header.pop("__metadata__", None)
    return header, 8 + n


def load_safetensors(path, names=None):
    """Reads tensors (all, or the given names) as float32 numpy arrays (bf16 widened)."""
    header, start = read_safetensors_header(path)
    size = os.path.getsize(path)
    out = {}
    with open(path, "rb") as f:
        for name, info in header.items():
            if names is not None and name not in names:
                continue
            dtype = _ST_DTYPES.get(info.get("dtype"))
            if dtype is None:
                raise ConvertError("%s: tensor %s has unsupported dtype %s"
                                   % (path, name, info.get("dtype")))
            b, e = info["data_offsets"]
            if not (0 <= b <= e and start + e <= size):
                raise ConvertError("%s: tensor %s lies outside the file" % (path, name))
            f.seek(start + b)
            raw = f.read(e - b)
            shape = tuple(info["shape"])
            if dtype == "bf16":
                u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
                arr = u.view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
            count = int(np.prod(shape)) if shape else 1
            if arr.size != count:
                raise ConvertError("%s: tensor %s holds %d values, shape %s needs %d"
                                   % (path, name, arr.size, list(shape), count))
            out[name] = arr.reshape(shape).astype(np.float32) if arr.dtype != np.float32 \
                else arr.reshape(shape)
    return out
