"""The GLM-4-Voice-9B language model: released directory -> parley GGUF.

The released layout (glm-4-voice-9b): config.json (ChatGLM), model-0000k-of-0000N.safetensors
shards with model.safetensors.index.json, tokenizer.model (tiktoken: base64 token bytes and
rank per line) and tokenizer_config.json (added_tokens_decoder: the special tokens and the
<|audio_N|> block).

Output (see README "Language model"): glm4.* hyperparameters and token ids, the vocabulary
(glm4.tokenizer.tokens: raw bytes per rank; glm4.tokenizer.added_ids / added_tokens), and
the tensors under their checkpoint names. Matrices take --type (default bf16, the released
type); 1-D tensors (norm weights, the QKV bias) are always f32.
"""
import base64
import binascii
import json
import os
import struct

import numpy as np

from convert_common import ConvertError, read_safetensors_header, load_safetensors
import gguf

ARCH = "glm4voice-lm"
IGNORED = {"transformer.rotary_pos_emb.inv_freq"}  # recomputed (E11)

SPECIALS = {  # metadata key -> token text
    "eot": "<|endoftext|>", "gmask": "[gMASK]", "sop": "<sop>", "system": "<|system|>",
    "user": "<|user|>", "assistant": "<|assistant|>", "observation": "<|observation|>",
    "begin_of_audio": "<|begin_of_audio|>", "end_of_audio": "<|end_of_audio|>",
}


def detect(src):
    path = os.path.join(src, "config.json")
    if not os.path.exists(path):
        return False
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return False
    return cfg.get("model_type") == "chatglm" or \
        any("ChatGLM" in a for a in cfg.get("architectures", []))


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ConvertError("%s: %s" % (path, e.strerror))
    except ValueError as e:
        raise ConvertError("%s: not valid JSON (%s)" % (path, e))


def _config(src):
    path = os.path.join(src, "config.json")
    cfg = _read_json(path)
    need = ["num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "kv_channels",
            "multi_query_group_num", "padded_vocab_size", "layernorm_epsilon", "seq_length"]
    for k in need:
        if not isinstance(cfg.get(k), (int, float)) or isinstance(cfg.get(k), bool):
            raise ConvertError("%s: missing or non-numeric %s" % (path, k))
    # the variant §4 describes; anything else is a different model
    want = {"rmsnorm": True, "add_qkv_bias": True, "add_bias_linear": False,
            "post_layer_norm": True, "apply_residual_connection_post_layernorm": False,
            "multi_query_attention": True}
    for k, v in want.items():
        if k in cfg and cfg[k] != v:
            raise ConvertError("%s: %s = %r is not supported (GLM-4-Voice has %r)"
                               % (path, k, cfg[k], v))
    if cfg.get("original_rope", True) is not True:
        raise ConvertError("%s: original_rope = false is not supported" % path)
    if cfg["num_attention_heads"] % cfg["multi_query_group_num"]:
        raise ConvertError("%s: num_attention_heads is not a multiple of multi_query_group_num"
                           % path)
    return cfg


def expected_shapes(cfg):
    D, F, L = cfg["hidden_size"], cfg["ffn_hidden_size"], cfg["num_layers"]
    H, G, Dh, V = (cfg["num_attention_heads"], cfg["multi_query_group_num"], cfg["kv_channels"],
                   cfg["padded_vocab_size"])
    qkv = (H + 2 * G) * Dh
    out = {"transformer.embedding.word_embeddings.weight": (V, D),
           "transformer.encoder.final_layernorm.weight": (D,),
           "transformer.output_layer.weight": (V, D)}
    for l in range(L):
        p = "transformer.encoder.layers.%d." % l
        out[p + "input_layernorm.weight"] = (D,)
        out[p + "self_attention.query_key_value.weight"] = (qkv, D)
        out[p + "self_attention.query_key_value.bias"] = (qkv,)
        out[p + "self_attention.dense.weight"] = (D, H * Dh)
        out[p + "post_attention_layernorm.weight"] = (D,)
        out[p + "mlp.dense_h_to_4h.weight"] = (2 * F, D)
        out[p + "mlp.dense_4h_to_h.weight"] = (D, F)
    return out


def _weight_map(src):
    """name -> shard path, from the index (or a single model.safetensors)."""
    index = os.path.join(src, "model.safetensors.index.json")
    if os.path.exists(index):
        wm = _read_json(index).get("weight_map")
        if not isinstance(wm, dict):
            raise ConvertError("%s: no weight_map" % index)
        out = {}
        for name, shard in wm.items():
            path = os.path.join(src, shard)
            if os.path.basename(shard) != shard or not os.path.exists(path):
                raise ConvertError("%s: shard %s (holding %s) is missing" % (index, shard, name))
            out[name] = path
        return out
    single = os.path.join(src, "model.safetensors")
    if not os.path.exists(single):
        raise ConvertError("%s: neither model.safetensors.index.json nor model.safetensors"
                           % src)
    header, _ = read_safetensors_header(single)
    return {name: single for name in header}


def read_tiktoken(path):
    """tokenizer.model -> list of token bytes, index = rank."""
    tokens = []
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        raise ConvertError("%s: %s" % (path, e.strerror))
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ConvertError("%s:%d: expected '<base64> <rank>'" % (path, n))
        try:
            tok = base64.b64decode(parts[0], validate=True)
        except (binascii.Error, ValueError):
            raise ConvertError("%s:%d: bad base64" % (path, n))
        if int(parts[1]) != len(tokens):
            raise ConvertError("%s:%d: rank %s out of order (expected %d)"
                               % (path, n, parts[1].decode(), len(tokens)))
        if not tok:
            raise ConvertError("%s:%d: empty token" % (path, n))
        tokens.append(tok)
    if len(set(tokens)) != len(tokens):
        raise ConvertError("%s: duplicate tokens" % path)
    return tokens


def read_added(src, n_base):
    """{id: content} of the added tokens (ids >= n_base), merged from the files transformers
    keeps them in: tokenizer_config.json (added_tokens_decoder), added_tokens.json
    (content -> id) and tokenizer.json (added_tokens), whichever exist. They must agree."""
    out, origin = {}, {}

    def put(path, i, content):
        if not isinstance(i, int) or isinstance(i, bool) or not isinstance(content, str) \
                or not content:
            raise ConvertError("%s: bad added token entry %r: %r" % (path, i, content))
        if i < n_base:
            raise ConvertError("%s: added token %s has id %d inside the base vocabulary"
                               % (path, content, i))
        if out.get(i, content) != content:
            raise ConvertError("%s: id %d is %s here but %s in %s"
                               % (path, i, content, out[i], origin[i]))
        out[i], origin[i] = content, path

    tc = os.path.join(src, "tokenizer_config.json")
    dec = _read_json(tc).get("added_tokens_decoder", {})
    if not isinstance(dec, dict):
        raise ConvertError("%s: added_tokens_decoder is not an object" % tc)
    for k, v in dec.items():
        if not k.isdigit() or not isinstance(v, dict):
            raise ConvertError("%s: bad added token entry %r" % (tc, k))
        put(tc, int(k), v.get("content"))
    at = os.path.join(src, "added_tokens.json")
    if os.path.exists(at):
        d = _read_json(at)
        if not isinstance(d, dict):
            raise ConvertError("%s: not an object" % at)
        for content, i in d.items():
            put(at, i, content)
    tj = os.path.join(src, "tokenizer.json")
    if os.path.exists(tj):
        for v in _read_json(tj).get("added_tokens", []) or []:
            if not isinstance(v, dict):
                raise ConvertError("%s: bad added_tokens entry" % tj)
            put(tj, v.get("id"), v.get("content"))
    if not out:
        raise ConvertError("%s: no added tokens (added_tokens_decoder is empty)" % tc)
    if len(set(out.values())) != len(out):
        raise ConvertError("%s: two ids share an added token's text" % src)
    return out


def _tokenizer_meta(src, cfg):
    tokens = read_tiktoken(os.path.join(src, "tokenizer.model"))
    tc = os.path.join(src, "tokenizer_config.json")
    added = read_added(src, len(tokens))
    by_text = {v: k for k, v in added.items()}
    meta = {}
    for key, text in SPECIALS.items():
        if text not in by_text:
            raise ConvertError("%s: special token %s is missing" % (tc, text))
        meta["glm4.token." + key] = by_text[text]
    if "<|audio_0|>" not in by_text:
        raise ConvertError("%s: no <|audio_0|> token" % tc)
    off, n = by_text["<|audio_0|>"], 0
    while added.get(off + n) == "<|audio_%d|>" % n:
        n += 1
    meta["glm4.token.audio_offset"] = off
    meta["glm4.token.audio_count"] = n
    V = cfg["padded_vocab_size"]
    if max(added) >= V:
        raise ConvertError("%s: token id %d is beyond padded_vocab_size %d" % (tc, max(added), V))
    eos = cfg.get("eos_token_id", [meta["glm4.token.eot"]])
    eos = eos if isinstance(eos, list) else [eos]
    if not eos or not all(isinstance(i, int) and 0 <= i < V for i in eos):
        raise ConvertError("%s: bad eos_token_id %r" % (os.path.join(src, "config.json"), eos))
    return tokens, added, meta, eos


def convert(src, out_path, args):
    cfg = _config(src)
    type_name = getattr(args, "type", None) or "bf16"
    wtype = gguf.TYPE_NAMES[type_name]
    tokens, added, tok_meta, eos = _tokenizer_meta(src, cfg)
    shapes = expected_shapes(cfg)
    wm = _weight_map(src)
    for name in wm:
        if name not in shapes and name not in IGNORED:
            raise ConvertError("%s: unknown tensor %s (not a GLM-4-Voice LM weight)"
                               % (wm[name], name))
    for name in shapes:
        if name not in wm:
            raise ConvertError("%s: tensor %s is missing" % (src, name))
    if wtype == gguf.Q8_0:
        for name, shape in shapes.items():
            if len(shape) == 2 and shape[1] % 32:
                raise ConvertError("%s: q8_0 needs rows of a multiple of 32 values, %s has %d"
                                   % (src, name, shape[1]))

    w = gguf.Writer()
    w.add("general.architecture", ARCH)
    w.add("general.name", os.path.basename(os.path.normpath(src)))
    w.add("glm4.weight_type", type_name)
    w.add("glm4.block_count", cfg["num_layers"])
    w.add("glm4.embedding_length", cfg["hidden_size"])
    w.add("glm4.feed_forward_length", cfg["ffn_hidden_size"])
    w.add("glm4.attention.head_count", cfg["num_attention_heads"])
    w.add("glm4.attention.head_count_kv", cfg["multi_query_group_num"])
    w.add("glm4.attention.key_length", cfg["kv_channels"])
    w.add("glm4.rope.dimension_count", cfg["kv_channels"] // 2)
    w.add("glm4.rope.freq_base", 10000.0 * float(cfg.get("rope_ratio", 1)))
    w.add("glm4.attention.layer_norm_rms_epsilon", float(cfg["layernorm_epsilon"]))
    w.add("glm4.context_length", cfg["seq_length"])
    w.add("glm4.vocab_size", cfg["padded_vocab_size"])
    for k, v in tok_meta.items():
        w.add(k, v)
    w.add("glm4.token.stop", eos, gguf.INT32)
    w.add("glm4.tokenizer.tokens", tokens, gguf.STRING)
    ids = sorted(added)
    w.add("glm4.tokenizer.added_ids", ids, gguf.INT32)
    w.add("glm4.tokenizer.added_tokens", [added[i] for i in ids], gguf.STRING)

    # shapes from the shard headers first: a bad checkpoint fails before anything is written
    specs = []
    for name, shape in shapes.items():  # embedding, final norm, output, then the layers
        header, _ = read_safetensors_header(wm[name])
        got = tuple(header[name].get("shape", ())) if name in header else None
        if got is None:
            raise ConvertError("%s: tensor %s is not in this shard (the index says it is)"
                               % (wm[name], name))
        if got != shape:
            raise ConvertError("%s: tensor %s has shape %s, config.json implies %s"
                               % (wm[name], name, list(got), list(shape)))
        t = gguf.F32 if len(shape) == 1 else wtype
        specs.append((name, shape, t, _nbytes(shape, t), _loader(wm[name], name, t)))
    _write_streaming(w, out_path, specs)


def _nbytes(shape, t):
    n = int(np.prod(shape, dtype=np.int64))
    return {gguf.F32: 4 * n, gguf.F16: 2 * n, gguf.BF16: 2 * n, gguf.Q8_0: n // 32 * 34}[t]


def _loader(shard, name, t):
    def load():
        a = load_safetensors(shard, {name})[name]
        return gguf.encode_tensor(a, t)
    return load


def _write_streaming(w, path, specs):
    """Writes w's metadata and the tensors of specs [(name, shape, type, bytes, load)], loading
    and encoding one tensor at a time: the 9B checkpoint never has to fit in memory (gguf.Writer
    keeps every tensor until it writes). Same layout as gguf.Writer.write."""
    head = [gguf.GGUF_MAGIC, struct.pack("<IQQ", gguf.GGUF_VERSION, len(specs), len(w.kv))]
    for key, vtype, value, *etype in w.kv:
        head.append(w._string(key) + struct.pack("<I", vtype)
                    + w._value(vtype, value, etype[0] if etype else None))
    offset = 0
    for name, shape, t, nbytes, _ in specs:
        dims = tuple(reversed(shape))
        head.append(w._string(name) + struct.pack("<I", len(dims))
                    + struct.pack("<%dQ" % len(dims), *dims) + struct.pack("<IQ", t, offset))
        offset += -(-nbytes // w.alignment) * w.alignment
    header = b"".join(head)
    tmp = path + ".part"
    try:
        with open(tmp, "wb") as f:
            f.write(header + b"\0" * (-len(header) % w.alignment))
            for name, _, _, nbytes, load in specs:
                data = load()
                if len(data) != nbytes:
                    raise ConvertError("tensor %s: %d bytes encoded, %d expected"
                                       % (name, len(data), nbytes))
                f.write(data)
                f.write(b"\0" * (-len(data) % w.alignment))
        os.replace(tmp, path)
    except OSError as e:
        raise ConvertError("%s: %s" % (path, e.strerror))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
