"""PyTorch / Python reference of the GLM-4-Voice language model and its text tokenizer,
written from the spec (§4.3, §4.5, §5 and errata E12–E15). Imported by lm_torch.py; running
it as a golden generator (tests/run.sh runs every tests/golden/*.py) does nothing.

The pre-tokenizer is a hand-written scanner of the regex's seven alternatives (leftmost
alternative, greedy with the regex's backtracking), with Unicode categories from Python's
unicodedata: it shares no code with the PCRE2 pattern the C side compiles, so the two check
each other.
"""
import unicodedata

import torch

# ---- text tokenizer ------------------------------------------------------------------------

# \s of tiktoken's regex engine: Unicode White_Space (E12), not Python's str.isspace().
WHITE_SPACE = set(chr(c) for c in [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680,
                                   0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
                  + list(range(0x2000, 0x200B)))
CONTRACTIONS = ["s", "t", "re", "ve", "m", "ll", "d"]
# simple case folding of the contraction letters (E12): s also matches U+017F long s
FOLD = {"s": "sSſ", "t": "tT", "r": "rR", "e": "eE", "v": "vV", "m": "mM", "l": "lL",
        "d": "dD"}


def is_l(c):
    return unicodedata.category(c)[0] == "L"


def is_n(c):
    return unicodedata.category(c)[0] == "N"


def is_ws(c):
    return c in WHITE_SPACE


def _match_at(s, i):
    n = len(s)
    # 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if s[i] == "'":
        for c in CONTRACTIONS:
            if i + 1 + len(c) <= n and all(s[i + 1 + k] in FOLD[ch] for k, ch in enumerate(c)):
                return i + 1 + len(c)
    # 2. [^\r\n\p{L}\p{N}]?\p{L}+
    j = i
    if s[j] not in "\r\n" and not is_l(s[j]) and not is_n(s[j]) and j + 1 < n and is_l(s[j + 1]):
        j += 1
    if is_l(s[j]):
        while j < n and is_l(s[j]):
            j += 1
        return j
    # 3. \p{N}{1,3}
    if is_n(s[i]):
        j = i
        while j < n and j < i + 3 and is_n(s[j]):
            j += 1
        return j
    # 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    def punct(c):
        return not is_ws(c) and not is_l(c) and not is_n(c)
    j = i + 1 if s[i] == " " and i + 1 < n and punct(s[i + 1]) else i
    if punct(s[j]):
        while j < n and punct(s[j]):
            j += 1
        while j < n and s[j] in "\r\n":
            j += 1
        return j
    # 5. \s*[\r\n]+ : the whitespace run up to its last CR/LF
    j = i
    while j < n and is_ws(s[j]):
        j += 1
    last = -1
    for k in range(i, j):
        if s[k] in "\r\n":
            last = k
    if last >= 0:
        return last + 1
    # 6. \s+(?!\S) : the run, or all but its last character when a non-space follows
    if j > i:
        if j == n:
            return j
        if j - 1 > i:
            return j - 1
        # 7. \s+
        return j
    raise AssertionError("no alternative matches %r" % s[i])


def pretokenize(s):
    out, i = [], 0
    while i < len(s):
        j = _match_at(s, i)
        out.append(s[i:j])
        i = j
    return out


def bpe_piece(piece, ranks):
    """tiktoken's byte-pair encoding of one pre-token (bytes) -> ranks."""
    if piece in ranks:  # whole-piece lookup first (E13)
        return [ranks[piece]]
    parts = [piece[k:k + 1] for k in range(len(piece))]
    while len(parts) > 1:
        best, at = None, -1
        for k in range(len(parts) - 1):
            r = ranks.get(parts[k] + parts[k + 1])
            if r is not None and (best is None or r < best):
                best, at = r, k
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return [ranks[p] for p in parts]


class Tokenizer:
    def __init__(self, tokens, added):
        """tokens: list of bytes (index = rank = id); added: dict content -> id."""
        self.tokens = tokens
        self.ranks = {t: i for i, t in enumerate(tokens)}
        self.added = dict(added)
        self.added_by_id = {v: k for k, v in added.items()}
        self.max_added = max(len(k) for k in added)

    def encode_text(self, text):
        out = []
        for p in pretokenize(text):
            out += bpe_piece(p.encode("utf-8"), self.ranks)
        return out

    def encode(self, text, prefix=False):
        """Added tokens split out first, leftmost then longest (E14); the text between them
        is pre-tokenised as a whole text of its own."""
        out, i, start = [], 0, 0
        if prefix:
            out = [self.added["[gMASK]"], self.added["<sop>"]]
        while i < len(text):
            hit = None
            for ln in range(min(self.max_added, len(text) - i), 0, -1):
                if text[i:i + ln] in self.added:
                    hit = text[i:i + ln]
                    break
            if hit is None:
                i += 1
                continue
            out += self.encode_text(text[start:i])
            out.append(self.added[hit])
            i += len(hit)
            start = i
        out += self.encode_text(text[start:])
        return out

    def decode(self, ids):
        """E15: byte runs between added tokens decoded separately with replacement."""
        out, run = [], b""
        for t in ids:
            if t in self.added_by_id:
                out.append(run.decode("utf-8", "replace"))
                run = b""
                out.append(self.added_by_id[t])
            else:
                run += self.tokens[t]
        out.append(run.decode("utf-8", "replace"))
        return "".join(out)


def train_vocab(corpus, n_merges):
    """A small byte-level BPE vocabulary: 256 byte tokens, then merges of the most frequent
    adjacent pair over the pre-tokens of corpus (ties: smallest pair bytes)."""
    counts = {}
    for p in pretokenize(corpus):
        b = p.encode("utf-8")
        counts[b] = counts.get(b, 0) + 1
    words = {w: [w[k:k + 1] for k in range(len(w))] for w in counts}
    tokens = [bytes([b]) for b in range(256)]
    have = set(tokens)
    for _ in range(n_merges):
        pairs = {}
        for w, parts in words.items():
            for k in range(len(parts) - 1):
                key = (parts[k], parts[k + 1])
                pairs[key] = pairs.get(key, 0) + counts[w]
        pairs = {k: v for k, v in pairs.items() if k[0] + k[1] not in have}
        if not pairs:
            break
        best = min(pairs, key=lambda k: (-pairs[k], k))
        new = best[0] + best[1]
        tokens.append(new)
        have.add(new)
        for w, parts in words.items():
            k, out = 0, []
            while k < len(parts):
                if k + 1 < len(parts) and parts[k] == best[0] and parts[k + 1] == best[1]:
                    out.append(new)
                    k += 2
                else:
                    out.append(parts[k])
                    k += 1
            words[w] = out
    return tokens


# ---- the decoder -------------------------------------------------------------------------

def bf16_round(x):
    return x.to(torch.bfloat16).to(torch.float32)


def rms_norm(x, w, eps, round_bf16):
    r = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    y = w * r
    return bf16_round(y) if round_bf16 else y


def q8_round(x):
    """x [T][K] quantized per block of 32 as q8_0 activations and dequantized, as parley does
    for every linear layer with q8_0 weights (core/kernels/gemm_q8.h): d = max|x| / 127 in f32,
    q = round(x / d) (f32 division) with ties to EVEN (torch.round; parley's lrintf / cvtps2dq),
    q = 0 where d = 0, value d * q in f32."""
    T, K = x.shape
    b = x.reshape(T, K // 32, 32)
    d = b.abs().amax(-1, keepdim=True) / 127.0
    safe = torch.where(d > 0, d, torch.ones_like(d))
    q = torch.where(d > 0, torch.round(b / safe), torch.zeros_like(b))
    return (d * q).reshape(T, K)


def linear(x, w, round_bf16, quant_q8=False):
    """x · wᵀ; a model that runs in bf16 (round_bf16) feeds every linear layer bf16 activations:
    x is rounded to bf16 first, as parley's bf16 kernel does (products exact in f32). With q8_0
    weights (quant_q8) x is quantized per block first (q8_round)."""
    if quant_q8:  # exact products and sums (f64) of the quantized values, rounded to f32
        return (q8_round(x).double() @ w.double().T).float()
    return (bf16_round(x) if round_bf16 else x) @ w.T


def rope_cache(n_pos, rot_dim, base, round_bf16):
    theta = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim))
    ang = torch.outer(torch.arange(n_pos, dtype=torch.float32), theta).float()
    c, s = torch.cos(ang), torch.sin(ang)
    if round_bf16:
        c, s = bf16_round(c), bf16_round(s)
    return c, s  # [n_pos][R/2]


def apply_rope(x, c, s, rot_dim):
    """x [T][heads][Dh]; interleaved pairs (2i, 2i+1) of the first rot_dim dims rotate."""
    xr, xp = x[..., :rot_dim], x[..., rot_dim:]
    x0, x1 = xr[..., 0::2], xr[..., 1::2]
    c, s = c[:, None, :], s[:, None, :]
    o0 = x0 * c - x1 * s
    o1 = x1 * c + x0 * s
    out = torch.stack([o0, o1], -1).flatten(-2)
    return torch.cat([out, xp], -1)


def forward(w, cfg, ids, round_bf16=False, past=None, quant_q8=False):
    """Logits [T][V] of the new tokens ids (a list), f32. past: per layer (K, V) of the
    earlier positions after RoPE (None: none); it is extended in place when given."""
    L, H, G = cfg["num_layers"], cfg["num_attention_heads"], cfg["multi_query_group_num"]
    Dh, F, eps = cfg["kv_channels"], cfg["ffn_hidden_size"], cfg["layernorm_epsilon"]
    R = Dh // 2
    T = len(ids)
    p0 = past[0][0].shape[0] if past and past[0] is not None else 0
    c, s = rope_cache(p0 + T, R, 10000.0 * cfg["rope_ratio"], round_bf16)
    c, s = c[p0:], s[p0:]
    x = w["transformer.embedding.word_embeddings.weight"][torch.tensor(ids)]
    # query i (position p0 + i) sees keys 0 .. p0 + i
    mask = torch.full((T, p0 + T), float("-inf")).triu(p0 + 1)
    for layer in range(L):
        p = "transformer.encoder.layers.%d." % layer
        y = rms_norm(x, w[p + "input_layernorm.weight"], eps, round_bf16)
        z = linear(y, w[p + "self_attention.query_key_value.weight"], round_bf16, quant_q8) + \
            w[p + "self_attention.query_key_value.bias"]
        q = z[:, :H * Dh].reshape(T, H, Dh)
        k = z[:, H * Dh:(H + G) * Dh].reshape(T, G, Dh)
        v = z[:, (H + G) * Dh:].reshape(T, G, Dh)
        q, k = apply_rope(q, c, s, R), apply_rope(k, c, s, R)
        if past is not None:
            if past[layer] is not None:
                k = torch.cat([past[layer][0], k])
                v = torch.cat([past[layer][1], v])
            past[layer] = (k, v)
        k = k.repeat_interleave(H // G, dim=1)
        v = v.repeat_interleave(H // G, dim=1)
        sc = torch.einsum("thd,uhd->htu", q, k) / (Dh ** 0.5) + mask
        pr = torch.softmax(sc, -1)
        ctx = torch.einsum("htu,uhd->thd", pr, v).reshape(T, H * Dh)
        x = x + linear(ctx, w[p + "self_attention.dense.weight"], round_bf16, quant_q8)
        y = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps, round_bf16)
        u = linear(y, w[p + "mlp.dense_h_to_4h.weight"], round_bf16, quant_q8)
        m = torch.nn.functional.silu(u[:, :F]) * u[:, F:]
        x = x + linear(m, w[p + "mlp.dense_4h_to_h.weight"], round_bf16, quant_q8)
    x = rms_norm(x, w["transformer.encoder.final_layernorm.weight"], eps, round_bf16)
    return linear(x, w["transformer.output_layer.weight"], round_bf16, quant_q8)


def greedy(w, cfg, ids, n, round_bf16=False, quant_q8=False):
    """Last-position logits of the prompt, and n greedy ids (argmax over every row), decoded
    with a cache of past K/V. Its first step is checked against the cache-free forward of
    the prompt plus one token: within f32 rounding, or with bf16 activations (round_bf16)
    within the one-step flips of bf16 roundings that f32 differences cause (measured 8e-4), or
    with q8_0 activations (quant_q8) within the one-step flips of their quantization (measured
    5.6e-3 on the text turn, 0 on the audio turn)."""
    past = [None] * cfg["num_layers"]
    lg = forward(w, cfg, list(ids), round_bf16, past, quant_q8)[-1]
    first, out = lg, []
    for i in range(n):
        t = int(torch.argmax(lg))
        out.append(t)
        lg = forward(w, cfg, [t], round_bf16, past, quant_q8)[-1]
        if i == 0:
            full = forward(w, cfg, list(ids) + [t], round_bf16, None, quant_q8)[-1]
            d = float((full - lg).abs().max() / full.abs().max())
            tol = 2e-2 if quant_q8 else 3e-3 if round_bf16 else 1e-5
            assert d < tol, "cached and uncached reference disagree: %g" % d
    return first, out


if __name__ == "__main__":
    pass  # a module, not a generator
