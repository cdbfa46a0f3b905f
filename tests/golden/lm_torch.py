"""Golden files for the language model, its converter and its text tokenizer.

    lm_torch.py OUTDIR

1. Writes OUTDIR/lm_ckpt/: a small random-weight GLM-4-Voice LM in the released layout
   (config.json, three bf16 safetensors shards + model.safetensors.index.json, a trained
   tiktoken-format tokenizer.model, tokenizer_config.json with the GLM-4 special tokens and a
   block of <|audio_N|> tokens after them). Real head size 128 with RoPE on 64, the real GQA
   ratio (32 query heads over 2 KV heads), width 256, 2 layers.
2. Converts it with deploy/convert.py to OUTDIR/lm_tiny_{f32,f16,bf16,q8_0}.gguf, and checks
   the converter's refusals (missing shard, wrong shape, unknown key).
3. Runs the reference (lm_ref.py) on a text turn and an audio turn built with the chat
   template and the reference tokenizer, with each type's rounded weights: the prompt's
   last logits and 32 greedy ids -> OUTDIR/lm_torch.gguf.
4. Encodes >= 1000 varied strings with the reference tokenizer -> OUTDIR/lm_bpe.gguf.
"""
import base64
import contextlib
import io
import json
import os
import random
import shutil
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "deploy"))
import convert as convert_main  # noqa: E402  (deploy/convert.py)
import gguf  # noqa: E402
import lm_ref  # noqa: E402

N_AUDIO = 512
N_GREEDY = 32
TYPES = ["f32", "f16", "bf16", "q8_0"]
SYS_AUDIO = ("User will provide you with a speech instruction. Do it step by step. First, think "
             "about the instruction and respond in a interleaved manner, with 13 text token "
             "followed by 26 audio tokens. ")
SYS_TEXT = ("User will provide you with a text instruction. Do it step by step. First, think "
            "about the instruction and respond in a interleaved manner, with 13 text token "
            "followed by 26 audio tokens.")
SPECIAL_NAMES = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
                 "<|user|>", "<|assistant|>", "<|observation|>", "<|begin_of_image|>",
                 "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>",
                 "<|begin_of_audio|>", "<|end_of_audio|>", "<|begin_of_transcription|>",
                 "<|end_of_transcription|>"]

CORPUS = (
    "The quick brown fox jumps over the lazy dog. It's what they're saying: we've seen "
    "it, I'm sure, you'll see, he'd know. Hello world! How are you doing today? "
    "User will provide you with a speech instruction. Do it step by step. First, think about "
    "the instruction and respond in a interleaved manner, with 13 text token followed by 26 "
    "audio tokens. streaming_transcription\n"
    "你好，世界！今天天气很好。我们一起去公园散步吧。语音助手可以回答问题。参考资料在这里。\n"
    "Привет, как дела? Это тестовая строка. こんにちは、元気ですか。안녕하세요 여러분.\n"
    "1234567890 3.14159 2024-12-05 $100 100% #hashtag @user https://example.com/path?q=1\n"
    "def main():\n    return 0\n\n\tindented\ttabs  and   spaces    \r\n"
    "emoji 😀 👍🏽 👨‍👩‍👧 ❤️ 🇨🇳 and symbols ©®™ → ← ∑ ∞ ≠ ≤ ≥ « » “quotes” ‘single’\n"
) * 3

WHOLE_ONLY = [" 参考", " Привет", " 世界你好"]  # entries merging never reaches (E13)


def bf16(t):
    return t.to(torch.bfloat16).to(torch.float32)


def make_vocab():
    tokens = lm_ref.train_vocab(CORPUS, 700)
    have = set(tokens)
    for w in WHOLE_ONLY:
        b = w.encode()
        if b not in have:
            tokens.append(b)
            have.add(b)
    n_base = len(tokens)
    added = {s: n_base + i for i, s in enumerate(SPECIAL_NAMES)}
    audio_off = n_base + 32
    for k in range(N_AUDIO):
        added["<|audio_%d|>" % k] = audio_off + k
    return tokens, added, audio_off


def make_config(vocab_rows):
    return {
        "architectures": ["ChatGLMModel"], "model_type": "chatglm",
        "num_layers": 2, "hidden_size": 256, "ffn_hidden_size": 384,
        "num_attention_heads": 32, "kv_channels": 128, "multi_query_attention": True,
        "multi_query_group_num": 2, "add_qkv_bias": True, "add_bias_linear": False,
        "rmsnorm": True, "layernorm_epsilon": 3.90625e-08, "post_layer_norm": True,
        "apply_residual_connection_post_layernorm": False,
        "apply_query_key_layer_scaling": True, "attention_softmax_in_fp32": True,
        "fp32_residual_connection": False, "rope_ratio": 1, "original_rope": True,
        "padded_vocab_size": vocab_rows, "seq_length": 512, "pad_token_id": None,
        "eos_token_id": None, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
    }


def make_weights(cfg, seed=1234):
    g = torch.Generator().manual_seed(seed)
    D, F, L = cfg["hidden_size"], cfg["ffn_hidden_size"], cfg["num_layers"]
    H, G, Dh, V = (cfg["num_attention_heads"], cfg["multi_query_group_num"], cfg["kv_channels"],
                   cfg["padded_vocab_size"])

    def rnd(*shape, std=0.02, mean=0.0):
        return bf16(torch.randn(*shape, generator=g) * std + mean)

    w = {"transformer.embedding.word_embeddings.weight": rnd(V, D, std=1.0)}
    for l in range(L):
        p = "transformer.encoder.layers.%d." % l
        w[p + "input_layernorm.weight"] = rnd(D, std=0.1, mean=1.0)
        w[p + "self_attention.query_key_value.weight"] = rnd((H + 2 * G) * Dh, D, std=0.08)
        w[p + "self_attention.query_key_value.bias"] = rnd((H + 2 * G) * Dh, std=0.1)
        w[p + "self_attention.dense.weight"] = rnd(D, H * Dh, std=0.02)
        w[p + "post_attention_layernorm.weight"] = rnd(D, std=0.1, mean=1.0)
        w[p + "mlp.dense_h_to_4h.weight"] = rnd(2 * F, D, std=0.06)
        w[p + "mlp.dense_4h_to_h.weight"] = rnd(D, F, std=0.04)
    w["transformer.encoder.final_layernorm.weight"] = rnd(D, std=0.1, mean=1.0)
    w["transformer.output_layer.weight"] = rnd(V, D, std=0.1)
    return w


def write_safetensors(path, tensors, dtype="BF16"):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        a = t.detach().numpy().astype(np.float32)
        if dtype == "BF16" and not name.endswith("inv_freq"):
            raw, dt = gguf.f32_to_bf16_bits(a).tobytes(), "BF16"
        else:
            raw, dt = a.tobytes(), "F32"
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_checkpoint(d, cfg, w, tokens, added):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    names = list(w)
    shards = [names[0:1] + names[1:6], names[6:10], names[10:]]
    wm, n = {}, len(shards)
    for i, part in enumerate(shards):
        fn = "model-%05d-of-%05d.safetensors" % (i + 1, n)
        t = {k: w[k] for k in part}
        if i == 0:
            t["transformer.rotary_pos_emb.inv_freq"] = torch.arange(32, dtype=torch.float32)
        write_safetensors(os.path.join(d, fn), t)
        for k in t:
            wm[k] = fn
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f, indent=2)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        for i, t in enumerate(tokens):
            f.write(base64.b64encode(t) + b" %d\n" % i)
    dec = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                    "single_word": False, "special": True} for s, i in added.items()}
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"added_tokens_decoder": dec, "eos_token": "<|endoftext|>",
                   "tokenizer_class": "ChatGLM4Tokenizer"}, f, indent=1, ensure_ascii=False)


def convert(src, out, typ):
    """deploy/convert.py's main, in this process (no interpreter start per call)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = convert_main.main([src, out, "--type", typ])
    return rc, err.getvalue()


def check_refusals(ckpt, tmp):
    """The converter must refuse a missing shard, a wrong shape and an unknown key."""
    def variant(name, edit, expect):
        d = os.path.join(tmp, name)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(ckpt, d)
        edit(d)
        rc, err = convert(d, os.path.join(tmp, name + ".gguf"), "f32")
        if rc == 0 or expect not in err:
            raise SystemExit("converter did not refuse %s (rc %d): %s" % (name, rc, err))
        shutil.rmtree(d)

    def missing(d):
        os.remove(os.path.join(d, "model-00002-of-00003.safetensors"))

    def shape(d):
        p = os.path.join(d, "config.json")
        c = json.load(open(p))
        c["ffn_hidden_size"] = 320
        json.dump(c, open(p, "w"))

    def unknown(d):
        p = os.path.join(d, "model.safetensors.index.json")
        c = json.load(open(p))
        c["weight_map"]["transformer.encoder.layers.0.mlp.extra.weight"] = \
            "model-00001-of-00003.safetensors"
        json.dump(c, open(p, "w"))

    def bad_vocab(d):
        with open(os.path.join(d, "tokenizer.model"), "ab") as f:
            f.write(b"!!notbase64 99999\n")

    def clash(d):
        with open(os.path.join(d, "added_tokens.json"), "w") as f:
            json.dump({"<|user|>": 770}, f)

    variant("missing_shard", missing, "is missing")
    variant("bad_vocab", bad_vocab, "tokenizer.model:")
    variant("added_clash", clash, "added_tokens.json: id 770")
    variant("bad_shape", shape, "config.json implies")
    variant("unknown_key", unknown, "unknown tensor")


def dequant_q8_0(a):
    raw = gguf.quantize_q8_0(a)
    blk = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("q", "i1", 32)]))
    return (blk["d"].astype(np.float32)[:, None] * blk["q"].astype(np.float32)).reshape(a.shape)


def rounded(w, typ):
    out = {}
    for k, t in w.items():
        if t.ndim == 1 or typ in ("f32", "bf16"):  # the checkpoint is bf16 already
            out[k] = t
        elif typ == "f16":
            out[k] = t.to(torch.float16).to(torch.float32)
        else:
            out[k] = torch.from_numpy(dequant_q8_0(t.numpy()).copy())
    return out


def text_turn(text):
    return "<|system|>\n" + SYS_TEXT + "<|user|>\n" + text + \
        "<|assistant|>streaming_transcription\n"


def audio_turn(codes):
    user = "<|begin_of_audio|>" + "".join("<|audio_%d|>" % c for c in codes) + "<|end_of_audio|>"
    return "<|system|>\n" + SYS_AUDIO + "<|user|>\n" + user + \
        "<|assistant|>streaming_transcription\n"


# ---- the tokenizer corpus ------------------------------------------------------------------

FRAGMENTS = [
    "hello", "Hello", "HELLO", " world", "world", "The", " quick", " brown", "fox", "jumps",
    "it's", "IT'S", "they're", "THEY'RE", "we've", "WE'VE", "I'm", "I'M", "you'll", "YOU'LL",
    "he'd", "HE'D", "don't", "DON'T", "'ſt", "'S", "'Re", "'lL", "'x", "''", "'",
    "你好", "世界", "今天天气很好", "参考", " 参考", "语音助手", "。", "，", "！",
    "Привет", " Привет", "как", "дела", "こんにちは", "元気", "안녕하세요", "مرحبا", "नमस्ते",
    "שלום", "Ελληνικά", "ÀÉÎÕÜ", "ß", "ﬁ", "Ⅻ", "½", "²", "٣", "१२३",
    "0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159", "2024-12-05", "$100",
    "100%", "#tag", "@user", "https://example.com/a?b=1", "a+b=c", "x_y", "__init__",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "  \n  ", "\u3000", "\u00a0", "\u0085",
    "\u2028", "\u2003", "\x1c", "\x1f", "\x00", "\x7f", "\u200b", "\ufeff",
    "😀", "👍🏽", "👨‍👩‍👧", "❤️", "🇨🇳", "©", "→", "∑", "“", "”", "«", "»", "...", "!!!", "?!",
    "<|user|>", "<|assistant|>", "<|system|>", "<|endoftext|>", "[gMASK]", "<sop>", "<eop>",
    "<|audio_0|>", "<|audio_5|>", "<|audio_511|>", "<|audio_512|>", "<|audio_01|>",
    "<|audio_99999|>", "<|USER|>", "<|user", "user|>", "<|begin_of_audio|>", "<|end_of_audio|>",
    "<|", "|>", "<", ">", "[MASK]", "streaming_transcription",
]


def corpus_strings(n=1200, seed=7):
    rng = random.Random(seed)
    out = list(FRAGMENTS)
    out += [CORPUS[i:i + 40] for i in range(0, 1200, 37)]
    out.append("".join("<|audio_%d|>" % rng.randrange(N_AUDIO) for _ in range(30)))
    out.append(" " * 17 + "x" + "\n" * 5 + "y" + "\t \t\n" * 3)
    while len(out) < n:
        k = rng.randint(1, 8)
        s = "".join(rng.choice(FRAGMENTS) + rng.choice(["", "", " ", "  ", "\n", "\t"])
                    for _ in range(k))
        out.append(s)
    return out


def decode_cases(tok):
    """(ids, text) pairs: invalid UTF-8 on decode, cut multi-byte sequences, added tokens."""
    r = tok.ranks
    cases = []
    b = lambda x: r[bytes([x])]  # noqa: E731
    seqs = [
        [b(0xE4)], [b(0xFF)], [b(0xC3), b(0x28)], [b(0xE4), b(0xBD)], [b(0xF0), b(0x9F)],
        [b(0xE4), b(0xBD), b(0xA0)], [b(0xED), b(0xA0), b(0x80)], [b(0xF4), b(0x90)],
        [b(0x80), b(0x80), b(0x41)], [b(0xE0), b(0x80), b(0x41)], [b(0xF0), b(0x80), b(0x80)],
        [b(0xC0), b(0xAF)], [b(0xE4)] + tok.encode("<|user|>") + [b(0xBD), b(0xA0)],
        tok.encode("hello<|audio_3|><|audio_4|> world"),
        tok.encode("你好") + tok.encode("<|endoftext|>") + tok.encode("再见"),
    ]
    for s in seqs:
        cases.append((s, tok.decode(s)))
    return cases


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "build/golden"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    tokens, added, audio_off = make_vocab()
    vocab_rows = -(-(audio_off + N_AUDIO + 1) // 128) * 128  # leaves padding rows
    cfg = make_config(vocab_rows)
    cfg["pad_token_id"] = added["<|endoftext|>"]
    cfg["eos_token_id"] = [added["<|endoftext|>"], added["<|user|>"], added["<|observation|>"]]
    w = make_weights(cfg)
    ckpt = os.path.join(out, "lm_ckpt")
    shutil.rmtree(ckpt, ignore_errors=True)
    write_checkpoint(ckpt, cfg, w, tokens, added)
    for typ in TYPES:
        rc, err = convert(ckpt, os.path.join(out, "lm_tiny_%s.gguf" % typ), typ)
        if rc != 0:
            raise SystemExit("convert %s failed: %s" % (typ, err))
    check_refusals(ckpt, os.path.join(out, "lm_tmp"))
    shutil.rmtree(os.path.join(out, "lm_tmp"), ignore_errors=True)

    tok = lm_ref.Tokenizer(tokens, added)
    text_in = "Hello! 你好，世界。What's 2+2? Answer step by step."
    rng = random.Random(3)
    codes = [rng.randrange(N_AUDIO) for _ in range(40)]
    prompts = {"text": text_turn(text_in), "audio": audio_turn(codes)}
    g = gguf.Writer()
    g.add("lm.text_input", text_in)
    g.add("lm.audio_codes", codes, gguf.INT32)
    g.add("lm.n_greedy", N_GREEDY)
    for name, s in prompts.items():
        ids = tok.encode(s, prefix=True)
        g.add("lm.%s.prompt" % name, s)
        g.add("lm.%s.ids" % name, ids, gguf.INT32)
        for typ in TYPES:
            wt = rounded(w, typ)
            with torch.no_grad():
                logits, gen = lm_ref.greedy(wt, cfg, ids, N_GREEDY, round_bf16=typ == "bf16",
                                              quant_q8=typ == "q8_0")
            g.add("lm.%s.%s.greedy" % (name, typ), gen, gguf.INT32)
            g.add_tensor("%s.%s.logits" % (name, typ), logits.numpy())
    # a second turn with history (§5.2/5.3): prev_input + prev_completion, stripped
    prev_completion = "好的。<|audio_7|><|audio_8|>Sure thing!  \n"
    turn2 = (prompts["text"] + prev_completion).strip() + "<|user|>\n" + "And then?" + \
        "<|assistant|>streaming_transcription\n"
    g.add("lm.turn2.completion", prev_completion)
    g.add("lm.turn2.prompt", turn2)
    g.add("lm.turn2.ids", tok.encode(turn2, prefix=True), gguf.INT32)
    g.write(os.path.join(out, "lm_torch.gguf"))

    strings = corpus_strings()
    b = gguf.Writer()
    b.add("bpe.strings", strings, gguf.STRING)
    ids, offs = [], [0]
    for s in strings:
        ids += tok.encode(s)
        offs.append(len(ids))
        assert tok.decode(tok.encode(s)) == s
    b.add("bpe.ids", ids, gguf.INT32)
    b.add("bpe.offsets", offs, gguf.INT32)
    dc = decode_cases(tok)
    flat, doffs = [], [0]
    for d, _ in dc:
        flat += d
        doffs.append(len(flat))
    b.add("bpe.decode_ids", flat, gguf.INT32)
    b.add("bpe.decode_offsets", doffs, gguf.INT32)
    b.add("bpe.decode_texts", [t for _, t in dc], gguf.STRING)
    b.write(os.path.join(out, "lm_bpe.gguf"))


if __name__ == "__main__":
    main()
