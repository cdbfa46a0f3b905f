"""Writes GGUF (version 3) model files: the converter's output format and the container of
test vectors that the golden tests hand from PyTorch to the C code.

Only numpy is needed. Tensors are given in PyTorch's shape order (outermost first); GGUF stores
dimensions innermost first, which this module takes care of.
"""
import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32

# metadata value types
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)

# tensor types (the ecosystem's ids)
F32, F16, Q8_0, BF16 = 0, 1, 8, 30
TYPE_NAMES = {"f32": F32, "f16": F16, "q8_0": Q8_0, "bf16": BF16}
Q8_0_BLOCK = 32

_SCALAR = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
           FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}


def f32_to_bf16_bits(x):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16); NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def quantize_q8_0(x):
    """float32 rows (last dim a multiple of 32) -> bytes of Q8_0 blocks: f16 d, then 32 int8."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[-1] % Q8_0_BLOCK:
        raise ValueError("q8_0 needs the last dimension to be a multiple of 32, got %d" % x.shape[-1])
    blocks = x.reshape(-1, Q8_0_BLOCK)
    amax = np.abs(blocks).max(axis=1)
    d = (amax / np.float32(127.0)).astype(np.float32)
    inv = np.where(d != 0, np.float32(1.0) / np.where(d != 0, d, 1), 0).astype(np.float32)
    # roundf in C rounds halves away from zero (numpy rounds them to even): match C
    scaled = blocks * inv[:, None]
    mag = np.abs(scaled)
    whole = np.floor(mag)  # adding 0.5 first would round 0.49999997 up in float32
    q = (np.sign(scaled) * (whole + (mag - whole >= np.float32(0.5)))).astype(np.int8)
    out = np.empty(len(blocks), dtype=[("d", "<f2"), ("q", "i1", (Q8_0_BLOCK,))])
    out["d"] = d.astype(np.float16)
    out["q"] = q
    return out.tobytes()


def encode_tensor(array, type_id):
    """Returns the bytes of a float array stored as type_id."""
    a = np.ascontiguousarray(array, dtype=np.float32)
    if type_id == F32:
        return a.tobytes()
    if type_id == F16:
        return a.astype(np.float16).tobytes()
    if type_id == BF16:
        return f32_to_bf16_bits(a).tobytes()
    if type_id == Q8_0:
        return quantize_q8_0(a)
    raise ValueError("unsupported tensor type %d" % type_id)


class Writer:
    """Collects metadata and tensors, then writes one GGUF file.

        w = Writer()
        w.add("general.architecture", "glm4voice")
        w.add_tensor("x", np.zeros((4, 8), np.float32), F16)
        w.write("out.gguf")
    """

    def __init__(self, alignment=DEFAULT_ALIGNMENT):
        self.kv = []  # (key, type, value[, element type])
        self.tensors = []  # (name, shape (torch order), type, bytes)
        self.alignment = alignment
        if alignment != DEFAULT_ALIGNMENT:
            self.add("general.alignment", alignment, UINT32)

    def add(self, key, value, vtype=None):
        """Adds a key. The type is guessed from Python values unless given: str -> STRING,
        bool -> BOOL, int -> INT64 when negative else UINT32 or UINT64, float -> FLOAT32,
        list -> ARRAY of the first element's guessed type (pass vtype to choose it)."""
        if any(k == key for k, *_ in self.kv):
            raise ValueError("duplicate metadata key %s" % key)
        if isinstance(value, (list, tuple, np.ndarray)):
            elems = list(value.tolist() if isinstance(value, np.ndarray) else value)
            etype = vtype if vtype is not None else (self._guess(elems[0]) if elems else INT32)
            self.kv.append((key, ARRAY, elems, etype))
        else:
            self.kv.append((key, vtype if vtype is not None else self._guess(value), value))

    @staticmethod
    def _guess(v):
        if isinstance(v, str):
            return STRING
        if isinstance(v, bool):
            return BOOL
        if isinstance(v, int):
            if v < 0:
                return INT64 if v < -2**31 else INT32
            return UINT32 if v < 2**32 else UINT64
        if isinstance(v, float):
            return FLOAT32
        raise TypeError("cannot store %r in GGUF metadata" % (v,))

    def add_tensor(self, name, array, type_id=F32):
        if any(n == name for n, *_ in self.tensors):
            raise ValueError("duplicate tensor %s" % name)
        shape = tuple(int(s) for s in np.shape(array)) or (1,)
        self.tensors.append((name, shape, type_id, encode_tensor(array, type_id)))

    def add_raw_tensor(self, name, shape, type_id, data):
        """A tensor whose bytes are already encoded (shape in torch order)."""
        if any(n == name for n, *_ in self.tensors):
            raise ValueError("duplicate tensor %s" % name)
        shape = tuple(int(s) for s in shape) or (1,)
        sizes = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q8_0: (Q8_0_BLOCK, 34)}
        if type_id in sizes:  # a wrong length would shift every later tensor's offset
            block, block_bytes = sizes[type_id]
            n = int(np.prod(shape, dtype=np.int64))
            if min(shape) < 1 or shape[-1] % block or len(data) != n // block * block_bytes:
                raise ValueError("tensor %s: %d bytes do not hold shape %s of type %d"
                                 % (name, len(data), shape, type_id))
        self.tensors.append((name, shape, type_id, bytes(data)))

    @staticmethod
    def _string(s):
        b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
        return struct.pack("<Q", len(b)) + b

    def _value(self, vtype, value, etype=None):
        if vtype == STRING:
            return self._string(value)
        if vtype == ARRAY:
            body = b"".join(self._value(etype, v) for v in value)
            return struct.pack("<IQ", etype, len(value)) + body
        return struct.pack(_SCALAR[vtype], value)

    def write(self, path):
        head = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv))]
        for key, vtype, value, *etype in self.kv:
            head.append(self._string(key) + struct.pack("<I", vtype)
                        + self._value(vtype, value, etype[0] if etype else None))
        offset = 0
        for name, shape, type_id, data in self.tensors:
            dims = tuple(reversed(shape))
            head.append(self._string(name) + struct.pack("<I", len(dims))
                        + struct.pack("<%dQ" % len(dims), *dims) + struct.pack("<IQ", type_id, offset))
            offset += -(-len(data) // self.alignment) * self.alignment
        header = b"".join(head)
        pad = -len(header) % self.alignment
        with open(path, "wb") as f:
            f.write(header + b"\0" * pad)
            for _, _, _, data in self.tensors:
                f.write(data + b"\0" * (-len(data) % self.alignment))
