#!/usr/bin/python3
"""PyTorch references for parley's elementwise, normalization, softmax, attention and RoPE
kernels, written to <out_dir>/ops_torch.gguf (default build/golden) for
tests/unit/test_golden_ops.c.

Usage: /usr/bin/python3 tests/golden/ops_torch.py [out_dir]

Each case is a few tensors named "<case>.<what>" (inputs and torch's output, PyTorch shape
order) plus metadata keys "<case>.<param>". Inputs are random with odd shapes; values that
the C side must read in a narrow type (bf16/f16 K/V, GLM-4's bf16 RMSNorm input) are rounded
to that type first, so both sides see the same numbers.

Everything is computed with torch ops from the model definitions (spec sections in the
comments), independently of the C code and of tests/ref/.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "deploy"))
import gguf  # noqa: E402  (deploy/gguf.py)

torch.manual_seed(20240605)
w = gguf.Writer()


def put(name, t, type_id=gguf.F32):
    w.add_tensor(name, t.detach().to(torch.float32).contiguous().numpy(), type_id)


# ---- activations (spec §3.3, §4.3g, §7.3, §8.3) -------------------------------------------

x = torch.cat([torch.randn(1999) * 4, torch.linspace(-12, 12, 1001)])  # 3000 values
put("act.x", x)
put("act.gelu", F.gelu(x))  # exact erf form (approximate='none')
put("act.silu", F.silu(x))
put("act.mish", F.mish(x))
put("act.elu", F.elu(x, alpha=1.0))
put("act.leaky_relu", F.leaky_relu(x, negative_slope=0.1))
put("act.leaky_relu_001", F.leaky_relu(x, negative_slope=0.01))
put("act.tanh", torch.tanh(x))
put("act.sin", torch.sin(x))
xe = torch.cat([torch.randn(1001) * 20, torch.linspace(-87, 88, 999)])
put("exp.x", xe)
put("exp.y", torch.exp(xe))

# Snake exactly as the HiFT code writes it (spec §8.3): alpha per channel, used directly
C, T = 7, 257
xs = torch.randn(1, C, T) * 2
alpha = torch.tensor([1.0, 0.05, 3.0, 0.37, 0.8, 12.0, 0.9])
a = alpha.unsqueeze(0).unsqueeze(-1)
ys = xs + (1.0 / (a + 0.000000001)) * torch.pow(torch.sin(xs * a), 2)
put("snake.x", xs[0])
put("snake.alpha", alpha)
put("snake.y", ys[0])

# SwiGLU as GLM-4's MLP: chunk the fused h->4h output in two, silu(first) * second
xg = torch.randn(3, 2 * 517) * 3
g0, g1 = torch.chunk(xg, 2, dim=-1)
put("swiglu.x", xg)
put("swiglu.y", F.silu(g0) * g1)

# ---- normalizations ----------------------------------------------------------------------

xl = torch.randn(5, 1283) * 2 + 0.5
wl = torch.rand(1283) * 4 - 2
bl = torch.rand(1283) * 2 - 1
put("layer_norm.x", xl)
put("layer_norm.w", wl)
put("layer_norm.b", bl)
put("layer_norm.y", F.layer_norm(xl, (1283,), wl, bl, eps=1e-5))
w.add("layer_norm.eps", 1e-5)


def glm4_rmsnorm(hidden_states, weight, eps):
    """GLM-4's RMSNorm module, forward() as written in modeling_chatglm.py (spec §4.3a)."""
    input_dtype = hidden_states.dtype
    variance = hidden_states.to(torch.float32).pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + eps)
    return (weight * hidden_states).to(input_dtype)


EPS_RMS = 1.5625e-07
xr = (torch.randn(3, 4100) * 3).to(torch.bfloat16)
wr = (torch.rand(4100) * 2).to(torch.bfloat16)
put("rms_norm_bf16.x", xr)
put("rms_norm_bf16.w", wr)
put("rms_norm_bf16.y", glm4_rmsnorm(xr, wr, EPS_RMS))
w.add("rms_norm_bf16.eps", EPS_RMS)
xr32 = torch.randn(4, 1031) * 3
wr32 = torch.rand(1031) * 2
put("rms_norm.x", xr32)
put("rms_norm.w", wr32)
put("rms_norm.y", glm4_rmsnorm(xr32, wr32, 1e-5))
w.add("rms_norm.eps", 1e-5)

for name, ch, t, groups in (("group_norm8", 256, 69, 8), ("group_norm1", 80, 203, 1)):
    xgn = torch.randn(1, ch, t) * 1.5 - 0.7
    wgn = torch.rand(ch) * 4 - 2
    bgn = torch.rand(ch) * 2 - 1
    put(name + ".x", xgn[0])
    put(name + ".w", wgn)
    put(name + ".b", bgn)
    put(name + ".y", F.group_norm(xgn, groups, wgn, bgn, eps=1e-5)[0])
    w.add(name + ".groups", groups)
    w.add(name + ".eps", 1e-5)

# ---- softmax -----------------------------------------------------------------------------

xsm = torch.randn(7, 45) * 5
put("softmax.x", xsm)
put("softmax.y", torch.softmax(xsm, dim=-1))

# ---- attention (spec §3.3 step 3-4, §4.3d, §7.3.3, §7.3.9) -------------------------------


def visible(kind, n_q, n_kv, pos0, block, n_valid):
    """Boolean [n_q, n_kv] mask from the spec's wording."""
    i = torch.arange(n_q).unsqueeze(1) + pos0  # absolute query positions
    j = torch.arange(n_kv).unsqueeze(0)
    m = torch.ones(n_q, n_kv, dtype=torch.bool)
    if kind == 1:  # causal: key position <= query position
        m = j <= i
    elif kind == 2:  # block causal: j <= i OR same block
        m = (j <= i) | (torch.div(j, block, rounding_mode="floor")
                        == torch.div(i, block, rounding_mode="floor"))
    if n_valid > 0:  # padding keys hidden from every query
        m = m & (j < n_valid)
    return m


def sdpa(q, k, v, mask_bool, bias):
    """softmax(q·kᵀ·scale + mask) · v for q [H, Q, D], k/v [H, K, D]: SDPA's definition
    (torch >= 2.0 provides F.scaled_dot_product_attention; this torch may not)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    add = torch.zeros(mask_bool.shape, dtype=torch.float32)
    add = add.masked_fill(~mask_bool, float("-inf")) + bias
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=add)
    return torch.softmax(q @ k.transpose(-1, -2) * scale + add, dim=-1) @ v


ATTN_CASES = [
    # name, n_q, n_kv, H, G, D, kv type, mask kind, pos0, block, n_valid, bias
    ("attn_gqa_causal", 37, 37, 8, 2, 40, gguf.F32, 1, 0, 1, 0, 0.0),
    ("attn_decode_bf16", 3, 70, 32, 2, 128, gguf.BF16, 1, 67, 1, 0, 0.0),
    ("attn_block_pad_f16", 45, 45, 4, 4, 24, gguf.F16, 2, 0, 10, 38, 0.0),
    ("attn_bias_one", 20, 33, 3, 3, 16, gguf.F32, 0, 0, 1, 0, 1.0),
]
for name, n_q, n_kv, H, G, D, kvt, kind, pos0, block, n_valid, bias in ATTN_CASES:
    q = torch.randn(n_q, H, D)
    k = torch.randn(n_kv, G, D)
    v = torch.rand(n_kv, G, D) * 2 - 1
    if kvt == gguf.BF16:
        k, v = k.bfloat16().float(), v.bfloat16().float()
    elif kvt == gguf.F16:
        k, v = k.half().float(), v.half().float()
    # GQA: query head h reads KV head h // (H / G) (spec §4.3d) = repeat_interleave
    kr = k.repeat_interleave(H // G, dim=1).transpose(0, 1)  # [H, K, D]
    vr = v.repeat_interleave(H // G, dim=1).transpose(0, 1)
    mask = visible(kind, n_q, n_kv, pos0, block, n_valid)
    out = sdpa(q.transpose(0, 1), kr, vr, mask, bias).transpose(0, 1)  # [Q, H, D]
    put(name + ".q", q)
    put(name + ".k", k, kvt)
    put(name + ".v", v, kvt)
    put(name + ".out", out)
    for key, val in (("n_head", H), ("n_kv_head", G), ("head_dim", D), ("mask", kind),
                     ("pos0", pos0), ("block", block), ("n_valid", n_valid)):
        w.add("%s.%s" % (name, key), val, gguf.INT32)
    w.add(name + ".bias", bias)

# ---- RoPE, the GLM-4 way (spec §4.3c) ----------------------------------------------------


def glm4_rope_cache(seq_len, n_elem, base, dtype):
    """RotaryEmbedding.forward_impl: θ, the outer product and cos/sin in f32, then the
    table cast to the model dtype (bf16 for GLM-4-Voice)."""
    theta = 1.0 / (base ** (torch.arange(0, n_elem, 2, dtype=torch.float) / n_elem))
    seq_idx = torch.arange(seq_len, dtype=torch.float)
    idx_theta = torch.outer(seq_idx, theta).float()
    cache = torch.stack([torch.cos(idx_theta), torch.sin(idx_theta)], dim=-1)
    return cache.to(dtype)


def glm4_apply_rope(x, cs):
    """x [N, H, D]; cs [N, R/2, 2]: adjacent pairs (2i, 2i+1) of the first R dims rotate."""
    rot = cs.shape[-2] * 2
    xr, x_pass = x[..., :rot], x[..., rot:]
    xs = xr.reshape(x.shape[0], x.shape[1], rot // 2, 2)
    c = cs.view(x.shape[0], 1, rot // 2, 2)
    out = torch.stack([xs[..., 0] * c[..., 0] - xs[..., 1] * c[..., 1],
                       xs[..., 1] * c[..., 0] + xs[..., 0] * c[..., 1]], -1)
    return torch.cat((out.flatten(2), x_pass), dim=-1)


positions = [0, 1, 2, 5, 100, 1023, 4097, 8190, 8191, 3, 777]
for name, dtype in (("rope", torch.bfloat16), ("rope_f32", torch.float32)):
    cache = glm4_rope_cache(8192, 64, 10000, dtype)
    cs = cache[torch.tensor(positions)].float()  # [N, 32, 2]
    xq = torch.randn(len(positions), 6, 128) * 4
    put(name + ".x", xq)
    put(name + ".cs", cs)
    put(name + ".y", glm4_apply_rope(xq, cs))
    w.add(name + ".pos", positions, gguf.INT32)
    w.add(name + ".rot_dim", 64, gguf.INT32)
    w.add(name + ".base", 10000.0)

w.add("ops_torch.torch_version", torch.__version__)
out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("build", "golden")
os.makedirs(out_dir, exist_ok=True)
path = os.path.join(out_dir, "ops_torch.gguf")
w.write(path)
print("wrote %s (%d tensors)" % (path, len(w.tensors)))
