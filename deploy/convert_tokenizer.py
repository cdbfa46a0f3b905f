"""Speech tokenizer converter: the released glm-4-voice-tokenizer directory (config.json of a
WhisperVQ encoder + model.safetensors) to a parley GGUF file (spec §3.1, §3.2).

Tensor names may be bare (as the Hugging Face release) or carry the training format's
`model.encoder.` prefix. Only what tokenization runs is written: the conv stem, the position
table, the first `quantize_position` layers and the codebook. Layers past the quantizer, the
final `layer_norm`, `embed_positions2`, the Whisper decoder (`model.decoder.*`) and the EMA
buffers are left out. The six weight matrices of each layer take --type (default f32, the
reference's inference type); every other tensor stays f32.
"""
import json
import os
import re

import numpy as np

import gguf
from convert_common import ConvertError, load_safetensors, read_safetensors_header

ARCH = "whisper_vq"
PREFIX = "model.encoder."
MATRICES = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
            "self_attn.out_proj.weight", "fc1.weight", "fc2.weight")
LAYER_TENSORS = ("self_attn_layer_norm.weight", "self_attn_layer_norm.bias",
                 "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight",
                 "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.out_proj.weight",
                 "self_attn.out_proj.bias", "final_layer_norm.weight", "final_layer_norm.bias",
                 "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
# Whisper's front-end (whisper-large-v3 preprocessor) when the directory has no
# preprocessor_config.json
FRONT_END = {"sampling_rate": 16000, "n_fft": 400, "hop_length": 160, "chunk_length": 30}


def detect(src_dir):
    cfg = os.path.join(src_dir, "config.json")
    if not os.path.exists(cfg) or not os.path.exists(os.path.join(src_dir, "model.safetensors")):
        return False
    try:
        with open(cfg) as f:
            c = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(c, dict) and "quantize_vocab_size" in c


def _config(src_dir):
    path = os.path.join(src_dir, "config.json")
    try:
        with open(path) as f:
            c = json.load(f)
    except (OSError, ValueError) as e:
        raise ConvertError("%s: %s" % (path, e))

    def need(key, default=None):
        v = c.get(key, default)
        if v is None:
            raise ConvertError("%s: no '%s'" % (path, key))
        return v

    hp = {
        "num_mel_bins": int(need("num_mel_bins")),
        "d_model": int(need("d_model")),
        "encoder_attention_heads": int(need("encoder_attention_heads")),
        "encoder_ffn_dim": int(need("encoder_ffn_dim")),
        "encoder_layers": int(need("encoder_layers")),
        "max_source_positions": int(need("max_source_positions")),
        "quantize_position": int(need("quantize_position", 16)),
        "quantize_causal_block_size": int(need("quantize_causal_block_size")),
        "pooling_kernel_size": int(c.get("pooling_kernel_size") or 1),
        "quantize_vocab_size": int(need("quantize_vocab_size")),
    }
    # what parley implements (spec §3.1): check instead of silently computing something else
    checks = [("encoder_causal_convolution", True), ("encoder_causal_attention", False),
              ("quantize_causal_encoder", False)]
    for key, want in checks:
        if key in c and bool(c[key]) != want:
            raise ConvertError("%s: %s = %r is not supported (parley implements %r)"
                               % (path, key, c[key], want))
    if c.get("pooling_type", "avg") not in ("avg", None):
        raise ConvertError("%s: pooling_type %r is not supported (avg only)"
                           % (path, c.get("pooling_type")))
    pp = c.get("pooling_position")
    if pp is not None and int(pp) != hp["quantize_position"]:
        raise ConvertError("%s: pooling_position %s differs from quantize_position %d"
                           % (path, pp, hp["quantize_position"]))
    act = c.get("activation_function", "gelu")
    if act != "gelu":
        raise ConvertError("%s: activation_function %r is not supported (gelu)" % (path, act))
    if hp["quantize_position"] > hp["encoder_layers"]:
        raise ConvertError("%s: quantize_position %d > encoder_layers %d"
                           % (path, hp["quantize_position"], hp["encoder_layers"]))
    front = dict(FRONT_END)
    pre = os.path.join(src_dir, "preprocessor_config.json")
    if os.path.exists(pre):
        try:
            with open(pre) as f:
                p = json.load(f)
        except (OSError, ValueError) as e:
            raise ConvertError("%s: %s" % (pre, e))
        for k in front:
            if k in p:
                front[k] = int(p[k])
        if "feature_size" in p and int(p["feature_size"]) != hp["num_mel_bins"]:
            raise ConvertError("%s: feature_size %s differs from num_mel_bins %d"
                               % (pre, p["feature_size"], hp["num_mel_bins"]))
    return hp, front


def _wanted(hp):
    names = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
             "embed_positions.weight", "codebook.weight"]
    for i in range(hp["quantize_position"]):
        names += ["layers.%d.%s" % (i, t) for t in LAYER_TENSORS]
    return names


def _shapes(hp):
    d, f, m = hp["d_model"], hp["encoder_ffn_dim"], hp["num_mel_bins"]
    s = {"conv1.weight": (d, m, 3), "conv1.bias": (d,), "conv2.weight": (d, d, 3),
         "conv2.bias": (d,), "embed_positions.weight": (hp["max_source_positions"], d),
         "codebook.weight": (hp["quantize_vocab_size"], d)}
    per = {"fc1.weight": (f, d), "fc1.bias": (f,), "fc2.weight": (d, f)}
    for i in range(hp["quantize_position"]):
        for t in LAYER_TENSORS:
            s["layers.%d.%s" % (i, t)] = per.get(t, (d, d) if t.endswith("proj.weight") else (d,))
    return s


def convert(src_dir, out_path, args):
    hp, front = _config(src_dir)
    st = os.path.join(src_dir, "model.safetensors")
    header, _ = read_safetensors_header(st)
    prefixed = any(k.startswith(PREFIX) for k in header)
    wanted = _wanted(hp)
    src_names = {(PREFIX + n if prefixed else n): n for n in wanted}
    missing = [s for s in src_names if s not in header]
    if missing:
        raise ConvertError("%s: missing tensor %s%s" % (st, missing[0],
                           " (and %d more)" % (len(missing) - 1) if len(missing) > 1 else ""))
    tensors = load_safetensors(st, set(src_names))
    shapes = _shapes(hp)
    wtype = gguf.TYPE_NAMES[getattr(args, "type", None) or "f32"]
    w = gguf.Writer()
    w.add("general.architecture", ARCH)
    w.add("general.name", os.path.basename(os.path.normpath(src_dir)))
    for k, v in hp.items():
        if k != "encoder_layers":
            w.add("%s.%s" % (ARCH, k), v, gguf.UINT32)
    w.add("%s.encoder_layers" % ARCH, hp["encoder_layers"], gguf.UINT32)
    w.add("%s.layer_norm_eps" % ARCH, 1e-5, gguf.FLOAT32)
    for k, v in front.items():
        w.add("%s.%s" % (ARCH, k), v, gguf.UINT32)
    for src, name in src_names.items():
        a = tensors[src]
        if tuple(a.shape) != shapes[name]:
            raise ConvertError("%s: tensor %s has shape %s, config.json implies %s"
                               % (st, src, list(a.shape), list(shapes[name])))
        if not np.all(np.isfinite(a)):
            raise ConvertError("%s: tensor %s holds non-finite values" % (st, src))
        is_matrix = re.match(r"layers\.\d+\.", name) and name.split(".", 2)[2] in MATRICES
        t = wtype if is_matrix else gguf.F32
        if t == gguf.Q8_0 and a.shape[-1] % gguf.Q8_0_BLOCK:
            t = gguf.F32
        w.add_tensor(name, a, t)
    try:
        w.write(out_path)
    except OSError as e:
        raise ConvertError("%s: %s" % (out_path, e.strerror))
