"""The Python side of the GGUF tests (tests/unit/test_gguf.c runs it with /usr/bin/python3).

    gguf_python.py OUTDIR         writes, with deploy/gguf.py,
                                  OUTDIR/gguf_python.gguf       every value type, every tensor
                                                                type (f32 references beside the
                                                                f16/bf16/q8_0 ones), long names
                                  OUTDIR/gguf_python_twin.gguf  the file test_gguf.c's twin()
                                                                writes with the C writer: the
                                                                two must be byte-identical
    gguf_python.py --check FILE   reads a twin file written by the C writer with the
                                  independent reader below and checks every byte of it
    gguf_python.py --corpus DIR   writes the fuzzer's seed corpus (tests/fuzz/corpus/gguf/)

tests/run.sh also runs it as a golden generator (OUTDIR = build/golden), which is harmless.
"""
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy"))
import gguf  # noqa: E402  (deploy/gguf.py)

LONG_NAME = "transformer.encoder.layers.39.self_attention.query_key_value.weight"


def write_python_file(path):
    w = gguf.Writer()
    w.add("general.architecture", "parley-test")
    w.add("test.u8", 200, gguf.UINT8)
    w.add("test.i8", -100, gguf.INT8)
    w.add("test.u16", 60000, gguf.UINT16)
    w.add("test.i16", -30000, gguf.INT16)
    w.add("test.u32", 4000000000, gguf.UINT32)
    w.add("test.i32", -2000000000, gguf.INT32)
    w.add("test.f32", 1.5, gguf.FLOAT32)
    w.add("test.bool", True)
    w.add("test.u64", 2**40 + 3, gguf.UINT64)
    w.add("test.u64_big", 2**63 + 1, gguf.UINT64)
    w.add("test.i64", -(2**40) - 5, gguf.INT64)
    w.add("test.f64", 0.1, gguf.FLOAT64)
    w.add("test.str", "h\u00e9llo \u4e16\u754c")
    w.add("test.empty_str", "")
    w.add("test.arr_i32", [1, -2, 3], gguf.INT32)
    w.add("test.arr_u8", [1, 2, 255], gguf.UINT8)
    w.add("test.arr_u64", [5, 2**63], gguf.UINT64)
    w.add("test.arr_f32", [0.5, -1.25], gguf.FLOAT32)
    w.add("test.arr_f64", [0.25], gguf.FLOAT64)
    w.add("test.arr_bool", [True, False], gguf.BOOL)
    w.add("test.arr_str", ["a", "", "\u0120the", "\u4e16\u754c"], gguf.STRING)
    w.add("test.arr_empty", [], gguf.INT32)
    w.add("test.vocab", ["tok%d" % i for i in range(1000)], gguf.STRING)

    x = (np.sin(np.arange(3 * 64, dtype=np.float32) * np.float32(0.37)) * 3).astype(np.float32)
    x = x.reshape(3, 64)
    x[1, 5] = 0.0
    x[2, :32] = 0.0  # an all-zero q8_0 block: d = 0
    w.add_tensor("ref", x, gguf.F32)
    w.add_tensor("w.f16", x, gguf.F16)
    w.add_tensor("w.bf16", x, gguf.BF16)
    w.add_tensor("w.q8_0", x, gguf.Q8_0)
    w.add_tensor(LONG_NAME, np.arange(2 * 32, dtype=np.float32).reshape(2, 32), gguf.F32)
    w.add_tensor("vec", np.array([1, 2, 3, 4, 5], dtype=np.float32), gguf.F32)
    w.add_tensor("four", np.arange(2 * 3 * 1 * 32, dtype=np.float32).reshape(2, 3, 1, 32),
                 gguf.F16)
    w.add_tensor("scalar", np.float32(7.0), gguf.F32)
    w.write(path)


def twin_writer():
    """Must match twin() in tests/unit/test_gguf.c value for value."""
    w = gguf.Writer(alignment=64)
    w.add("a.u32", 7, gguf.UINT32)
    w.add("a.i32", -7, gguf.INT32)
    w.add("a.u64", 2**40, gguf.UINT64)
    w.add("a.i64", -(2**40), gguf.INT64)
    w.add("a.f32", 0.25, gguf.FLOAT32)
    w.add("a.bool", True, gguf.BOOL)
    w.add("a.str", "text \u00e9", gguf.STRING)
    w.add("a.ai32", [1, -1, 5], gguf.INT32)
    w.add("a.au32", [1, 2, 4000000000], gguf.UINT32)
    w.add("a.af32", [0.5, -2.0], gguf.FLOAT32)
    w.add("a.astr", ["x", "yz", ""], gguf.STRING)
    w.add_tensor("t.f32", np.arange(6, dtype=np.float32).reshape(2, 3) * np.float32(0.5), gguf.F32)
    w.add_tensor("t.f16", np.array([1, -2, 0.5, 3], dtype=np.float32), gguf.F16)
    w.add_tensor("t.bf16", np.array([[1, 2], [-3, 0.125]], dtype=np.float32), gguf.BF16)
    w.add_raw_tensor("t.q8_0", (1, 32), gguf.Q8_0, bytes(range(34)))
    w.add_tensor(LONG_NAME, np.zeros((1, 1, 2, 3), dtype=np.float32), gguf.F32)
    return w


# ---- an independent reader, written from the GGUF v3 spec ---------------------------------

class Reader:
    def __init__(self, data):
        self.b = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.b):
            raise ValueError("truncated at offset %d (need %d bytes)" % (self.pos, n))
        r = self.b[self.pos:self.pos + n]
        self.pos += n
        return r

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        return self.take(self.unpack("<Q")).decode("utf-8")

    def value(self, t):
        fmts = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B",
                10: "<Q", 11: "<q", 12: "<d"}
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.unpack("<I"), self.unpack("<Q")
            return (et, [self.value(et) for _ in range(n)])
        v = self.unpack(fmts[t])
        if t == 7:
            assert v in (0, 1), "bool byte %d" % v
            v = bool(v)
        return v


def read_gguf(data):
    r = Reader(data)
    assert r.take(4) == b"GGUF", "magic"
    version, n_tensors, n_kv = r.unpack("<I"), r.unpack("<Q"), r.unpack("<Q")
    kv = {}
    for _ in range(n_kv):
        key = r.string()
        t = r.unpack("<I")
        assert key not in kv, "duplicate key " + key
        kv[key] = (t, r.value(t))
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.unpack("<I")
        dims = [r.unpack("<Q") for _ in range(n_dims)]
        tensors.append((name, tuple(reversed(dims)), r.unpack("<I"), r.unpack("<Q")))
    align = kv.get("general.alignment", (4, 32))[1]
    data_start = -(-r.pos // align) * align
    assert all(b == 0 for b in data[r.pos:data_start]), "header padding not zero"
    return version, kv, tensors, align, data_start


def check_twin(path):
    data = open(path, "rb").read()
    version, kv, tensors, align, start = read_gguf(data)
    want = twin_writer()
    assert version == 3, "version %d" % version
    assert align == 64, "alignment %d" % align
    got_keys = [(k, t, v) for k, (t, v) in kv.items()]
    want_keys = []
    for key, t, value, *et in want.kv:
        if t == gguf.ARRAY:
            value = (et[0], [float(np.float32(v)) if et[0] == gguf.FLOAT32 else v for v in value])
        elif t == gguf.FLOAT32:
            value = float(np.float32(value))
        want_keys.append((key, t, value))
    assert got_keys == want_keys, "keys differ:\n%s\n%s" % (got_keys, want_keys)
    offset = 0
    assert len(tensors) == len(want.tensors), "tensor count"
    for (name, shape, t, off), (wname, wshape, wt, wdata) in zip(tensors, want.tensors):
        assert (name, shape, t) == (wname, wshape, wt), "tensor %s: %s vs %s" % (
            name, (name, shape, t), (wname, wshape, wt))
        assert off == offset, "tensor %s at offset %d, expected %d" % (name, off, offset)
        got = data[start + off:start + off + len(wdata)]
        assert got == wdata, "tensor %s: data differs" % name
        pad = -len(wdata) % align
        assert data[start + off + len(wdata):start + off + len(wdata) + pad] == b"\0" * pad
        offset += len(wdata) + pad
    assert len(data) == start + offset, "file is %d bytes, expected %d" % (len(data), start + offset)
    print("gguf_python: %s matches the twin (%d keys, %d tensors, %d bytes)"
          % (path, len(kv), len(tensors), len(data)))


# ---- fuzz seed corpus ---------------------------------------------------------------------

def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def raw(kvs=b"", n_kv=0, infos=b"", n_tensors=0, data=b"", version=3, magic=b"GGUF", align=32):
    head = magic + struct.pack("<IQQ", version, n_tensors, n_kv) + kvs + infos
    return head + b"\0" * (-len(head) % align) + data


def info(name, dims, t, off):
    return s(name) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims) + \
        struct.pack("<IQ", t, off)


def write_corpus(outdir):
    os.makedirs(outdir, exist_ok=True)
    files = {}
    tmp = os.path.join(outdir, ".tmp.gguf")

    def from_writer(name, w):
        w.write(tmp)
        files[name] = open(tmp, "rb").read()
        os.remove(tmp)

    w = gguf.Writer()
    from_writer("valid-empty.gguf", w)
    w = gguf.Writer()
    w.add("general.architecture", "t")
    for t, v in [(gguf.UINT8, 1), (gguf.INT8, -1), (gguf.UINT16, 2), (gguf.INT16, -2),
                 (gguf.UINT32, 3), (gguf.INT32, -3), (gguf.FLOAT32, 0.5), (gguf.BOOL, True),
                 (gguf.UINT64, 4), (gguf.INT64, -4), (gguf.FLOAT64, 0.25)]:
        w.add("k.t%d" % t, v, t)
    w.add("k.arr", [1, 2, 3], gguf.INT32)
    w.add("k.strs", ["a", "bc", "", "\u4e16"], gguf.STRING)
    w.add("k.f64s", [0.5, 1.5], gguf.FLOAT64)
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    for name, t in [("f32", gguf.F32), ("f16", gguf.F16), ("bf16", gguf.BF16), ("q8_0", gguf.Q8_0)]:
        w.add_tensor("w." + name, x, t)
    from_writer("valid-types.gguf", w)
    w = gguf.Writer(alignment=64)
    w.add_tensor("a", np.ones((3,), np.float32))
    w.add_tensor("b", np.ones((1, 2, 1, 32), np.float32), gguf.Q8_0)
    w.add_tensor(LONG_NAME, np.ones((2, 2), np.float32), gguf.F16)
    from_writer("valid-align64.gguf", w)
    w = gguf.Writer()
    w.add("tokenizer.ggml.tokens", ["t%d" % i for i in range(100)], gguf.STRING)
    w.add("tokenizer.ggml.scores", [float(i) for i in range(100)], gguf.FLOAT32)
    w.add("general.alignment", 16, gguf.UINT32)
    w.alignment = 16
    w.add_tensor("e", np.ones((4, 4), np.float32), gguf.BF16)
    from_writer("valid-vocab.gguf", w)

    kv_a = s("a") + struct.pack("<II", gguf.UINT32, 1)
    t_w = info("w", [4], gguf.F32, 0)
    files["bad-magic.gguf"] = raw(magic=b"GGUX")
    files["bad-version1.gguf"] = raw(version=1)
    files["bad-truncated-header.gguf"] = raw(kv_a, 1)[:30]
    files["bad-tensor-count.gguf"] = raw(n_tensors=2**64 - 1)
    files["bad-kv-count.gguf"] = raw(kv_a, n_kv=2**63)
    files["bad-duplicate-key.gguf"] = raw(kv_a + kv_a, 2)
    files["bad-duplicate-tensor.gguf"] = raw(infos=t_w + info("w", [4], 0, 32), n_tensors=2,
                                             data=b"\0" * 64)
    files["bad-misaligned.gguf"] = raw(infos=info("w", [4], 0, 4), n_tensors=1, data=b"\0" * 64)
    files["bad-tensor-type.gguf"] = raw(infos=info("w", [4], 99, 0), n_tensors=1, data=b"\0" * 16)
    files["bad-q8-block.gguf"] = raw(infos=info("w", [33], 8, 0), n_tensors=1, data=b"\0" * 64)
    files["bad-nested-array.gguf"] = raw(s("a") + struct.pack("<IIQ", 9, 9, 1) +
                                         struct.pack("<IQ", 4, 0), 1)
    files["bad-string-length.gguf"] = raw(s("a") + struct.pack("<IQ", 8, 2**63), 1)
    files["bad-past-end.gguf"] = raw(infos=t_w, n_tensors=1, data=b"\0" * 8)
    files["bad-alignment.gguf"] = raw(s("general.alignment") + struct.pack("<II", 4, 3), 1)
    files["bad-overlap.gguf"] = raw(infos=t_w + info("v", [16], 0, 0), n_tensors=2,
                                    data=b"\0" * 64)
    for name, data in files.items():
        assert len(data) < 4096, name
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(data)
    print("gguf_python: wrote %d corpus files to %s" % (len(files), outdir))


def main(argv):
    if len(argv) == 3 and argv[1] == "--check":
        check_twin(argv[2])
    elif len(argv) == 3 and argv[1] == "--corpus":
        write_corpus(argv[2])
    elif len(argv) == 2 and not argv[1].startswith("-"):
        os.makedirs(argv[1], exist_ok=True)
        write_python_file(os.path.join(argv[1], "gguf_python.gguf"))
        twin_writer().write(os.path.join(argv[1], "gguf_python_twin.gguf"))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
