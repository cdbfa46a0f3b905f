"""PyTorch reference and golden vectors for the speech decoder (flow matching + HiFT).

    /usr/bin/python3 tests/golden/voice_torch.py [OUTDIR]      (default build/golden)

Writes, under OUTDIR:
  voice_src/{config.yaml, flow.pt, hift.pt}  a small random-weight decoder laid out exactly like
      the released glm-4-voice-decoder (HyperPyYAML config, state dicts with HiFT's
      weight_g/weight_v), real structure with small widths;
  voice_decoder.gguf   that directory converted by deploy/convert.py (the real converter);
  voice_torch.gguf     inputs and outputs of the reference below, checked by
      tests/unit/test_flow_golden.c, test_hift_golden.c and test_t2w_golden.c.

The reference is written from the spec (§7.3, §8.3, §7.4), in evaluation mode (errata E1: no
dropout), on the CPU in float32, with the random draws injected: the CFM's initial noise and the
NSF additive noise are numpy draws stored in the file; the SineGen phases come from
torch.manual_seed(42) + torch.rand as on the reference's GPU path (errata E5).
"""
import math
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "deploy"))
import gguf  # noqa: E402

torch.set_num_threads(1)
rng = np.random.RandomState(5)

# ---- the test decoder's configuration ------------------------------------------------------
CONFIG = """\
# set random seed, so that you may reproduce your result.
__set_seed1: !apply:random.seed [1986]
__set_seed3: !apply:torch.manual_seed [1986]

# fixed params
sample_rate: 22050
spk_embed_dim: 192

flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: 32
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 64
    input_frame_rate: 12.5
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.BlockConformerEncoder
        output_size: 48
        attention_heads: 2
        linear_units: 64
        num_blocks: 2
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'block_rel_selfattn'
        block_size: 10
        input_size: 32
        use_cnn_module: False
        macaron_style: False
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: 80
        sampling_ratios: [1, 1, 1, 1]
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [32, 32]
            dropout: 0
            attention_head_dim: 16
            n_blocks: 1
            num_mid_blocks: 2
            num_heads: 2
            act_fn: 'gelu'

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: 32
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 8]
    upsample_kernel_sizes: [16, 16]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: 32
"""


def randn(*shape, scale=1.0):
    return torch.from_numpy((rng.standard_normal(shape) * scale).astype(np.float32))


def uniform(lo, hi, *shape):
    return torch.from_numpy(rng.uniform(lo, hi, shape).astype(np.float32))


# ---- random checkpoints in the released layout ---------------------------------------------
def make_flow(hp):
    import convert_decoder
    shapes = convert_decoder.flow_shapes(hp)
    sd = {}
    for name, shape in shapes.items():
        if name.endswith("norm1.weight") or name.endswith("norm3.weight") or \
                ".norm_" in name and name.endswith(".weight") or \
                name.endswith("block.1.weight") or name.endswith("embed.out.1.weight") or \
                name.endswith("after_norm.weight") or \
                (name.startswith("length_regulator") and len(shape) == 1 and
                 int(name.split(".")[2]) % 3 == 1 and name.endswith("weight")):
            sd[name] = 1.0 + randn(*shape, scale=0.1)  # norm gains near 1
        elif len(shape) == 1 or name.endswith("pos_bias_u") or name.endswith("pos_bias_v"):
            sd[name] = randn(*shape, scale=0.1)
        else:
            fan_in = int(np.prod(shape[1:]))
            if ".up_blocks.0.2.conv.weight" in name:  # ConvTranspose [in, out, k]
                fan_in = shape[0] * shape[2] // 2
            sd[name] = randn(*shape, scale=1.0 / math.sqrt(fan_in))
    sd["input_embedding.weight"] = randn(hp["flow.vocab_size"], hp["flow.input_size"])
    return sd


def wn(shape_v, gain):
    """weight_g, weight_v whose folded weight has a norm of about `gain` per dim-0 slice."""
    v = randn(*shape_v)
    g = (gain * uniform(0.8, 1.2, shape_v[0])).reshape([shape_v[0]] + [1] * (len(shape_v) - 1))
    return g, v


def make_hift(hp):
    import convert_decoder
    shapes = convert_decoder.hift_shapes(hp)
    sd = {}
    plain = ("f0_predictor.classifier", "m_source", "source_downs")
    for name, shape in shapes.items():
        base = name.rsplit(".", 1)[0]
        if name.endswith(".alpha"):
            sd[name] = uniform(0.5, 1.5, *shape)
        elif name.endswith(".bias"):
            sd[name] = randn(*shape, scale=0.05)
        elif base.startswith(plain):
            sd[name] = randn(*shape, scale=1.0 / math.sqrt(int(np.prod(shape[1:]))))
        else:
            gain = 2.0 if base.startswith("ups.") else 0.5 if base == "conv_post" else 1.0
            g, v = wn(shape, gain)
            sd[base + ".weight_g"] = g
            sd[base + ".weight_v"] = v
    # an F0 of a few tens to a few hundred Hz, some frames under the 10 Hz voicing threshold
    sd["f0_predictor.classifier.bias"] = torch.tensor([40.0])
    sd["f0_predictor.classifier.weight"] = randn(1, hp["hift.f0_cond_channels"], scale=12.0)
    return sd


def W(sd, name):
    """A plain weight, or the weight-normalised one from weight_g / weight_v."""
    if name + ".weight" in sd:
        return sd[name + ".weight"]
    return torch._weight_norm(sd[name + ".weight_v"], sd[name + ".weight_g"], 0)


# ---- HiFT reference (spec §8.3) --------------------------------------------------------------
def snake(x, alpha):
    a = alpha[None, :, None]
    return x + (1.0 / (a + 1e-9)) * torch.sin(x * a).pow(2)


def resblock(sd, p, x, k, dil):
    for i, d in enumerate(dil):
        xt = snake(x, sd["%s.activations1.%d.alpha" % (p, i)])
        xt = F.conv1d(xt, W(sd, "%s.convs1.%d" % (p, i)), sd["%s.convs1.%d.bias" % (p, i)],
                      dilation=d, padding=(k * d - d) // 2)
        xt = snake(xt, sd["%s.activations2.%d.alpha" % (p, i)])
        xt = F.conv1d(xt, W(sd, "%s.convs2.%d" % (p, i)), sd["%s.convs2.%d.bias" % (p, i)],
                      padding=(k - 1) // 2)
        x = xt + x
    return x


def hift_forward(sd, hp, mel, noise, cache_src=None):
    """mel [80, T] -> (wave [L], source [L], f0 [T])."""
    x = mel[None]
    h = x
    for i in range(5):
        h = F.elu(F.conv1d(h, W(sd, "f0_predictor.condnet.%d" % (2 * i)),
                           sd["f0_predictor.condnet.%d.bias" % (2 * i)], padding=1))
    f0 = torch.abs(F.linear(h.transpose(1, 2), sd["f0_predictor.classifier.weight"],
                            sd["f0_predictor.classifier.bias"]).squeeze(-1))  # [1, T]
    up = int(np.prod(hp["hift.upsample_rates"])) * hp["hift.istft_hop"]
    f0s = F.interpolate(f0[:, None], scale_factor=float(up), mode="nearest")  # [1, 1, L]
    # SineGen
    nh = hp["hift.nb_harmonics"] + 1
    sr = hp["hift.sampling_rate"]
    fmat = torch.cat([f0s * (i + 1) / sr for i in range(nh)], dim=1)  # [1, H, L]
    theta = 2 * np.pi * (torch.cumsum(fmat, dim=-1) % 1)
    torch.manual_seed(42)
    phase = torch.distributions.uniform.Uniform(low=-np.pi, high=np.pi).sample((1, nh, 1))
    phase[:, 0, :] = 0
    sine = hp["hift.nsf_alpha"] * torch.sin(theta + phase)
    uv = (f0s > hp["hift.nsf_voiced_threshold"]).float()
    amp = uv * hp["hift.nsf_sigma"] + (1 - uv) * hp["hift.nsf_alpha"] / 3
    e = sine * uv + amp * noise[None]
    s = torch.tanh(F.linear(e.transpose(1, 2), sd["m_source.l_linear.weight"],
                            sd["m_source.l_linear.bias"])).transpose(1, 2)  # [1, 1, L]
    if cache_src is not None:
        s[:, :, :cache_src.shape[-1]] = cache_src
    n_fft, hop = hp["hift.istft_n_fft"], hp["hift.istft_hop"]
    window = torch.from_numpy(np.hanning(n_fft + 1)[:-1].astype(np.float32))  # periodic Hann
    spec = torch.stft(s[:, 0], n_fft, hop, n_fft, window=window, return_complex=True)
    S = torch.cat([spec.real, spec.imag], dim=1)
    x = F.conv1d(x, W(sd, "conv_pre"), sd["conv_pre.bias"], padding=3)
    rates, ks = hp["hift.upsample_rates"], hp["hift.upsample_kernel_sizes"]
    rbk = hp["hift.resblock_kernel_sizes"]
    for i in range(len(rates)):
        x = F.leaky_relu(x, hp["hift.lrelu_slope"])
        x = F.conv_transpose1d(x, W(sd, "ups.%d" % i), sd["ups.%d.bias" % i], stride=rates[i],
                               padding=(ks[i] - rates[i]) // 2)
        if i == len(rates) - 1:
            x = F.pad(x, (1, 0), mode="reflect")
        u = int(np.prod(rates[i + 1:])) if i + 1 < len(rates) else 1
        if u == 1:
            si = F.conv1d(S, sd["source_downs.%d.weight" % i], sd["source_downs.%d.bias" % i])
        else:
            si = F.conv1d(S, sd["source_downs.%d.weight" % i], sd["source_downs.%d.bias" % i],
                          stride=u, padding=u // 2)
        si = resblock(sd, "source_resblocks.%d" % i, si, hp["hift.source_resblock_kernel_sizes"][i],
                      hp["hift.source_resblock_dilation_sizes"][3 * i:3 * i + 3])
        x = x + si
        xs = None
        for j, k in enumerate(rbk):
            r = resblock(sd, "resblocks.%d" % (i * len(rbk) + j), x, k,
                         hp["hift.resblock_dilation_sizes"][3 * j:3 * j + 3])
            xs = r if xs is None else xs + r
        x = xs / len(rbk)
    x = F.leaky_relu(x)
    x = F.conv1d(x, W(sd, "conv_post"), sd["conv_post.bias"], padding=3)
    nb = n_fft // 2 + 1
    mag = torch.clip(torch.exp(x[:, :nb]), max=1e2)
    ph = torch.sin(x[:, nb:])
    wave = torch.istft(torch.complex(mag * torch.cos(ph), mag * torch.sin(ph)), n_fft, hop, n_fft,
                       window=window)
    wave = torch.clamp(wave, -hp["hift.audio_limit"], hp["hift.audio_limit"])
    return wave[0], s[0, 0], f0[0]


# ---- flow reference (spec §7.3) --------------------------------------------------------------
def mel_len(n, hp):
    n32 = np.float32(n)
    return int(np.float32(np.float32(n32 / np.float32(hp["flow.input_frame_rate"]))
                          * np.float32(22050)) / np.float32(256))


def layer_norm(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-5)


def rel_pos(n, d):
    pos = torch.arange(0, n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * -(math.log(10000.0) / d))
    pp = torch.zeros(n, d)
    pn = torch.zeros(n, d)
    pp[:, 0::2] = torch.sin(pos * div)
    pp[:, 1::2] = torch.cos(pos * div)
    pn[:, 0::2] = torch.sin(-1 * pos * div)
    pn[:, 1::2] = torch.cos(-1 * pos * div)
    return torch.cat([torch.flip(pp, [0]), pn[1:]], dim=0)  # [2n-1, d], row q <-> r = n-1-q


def encoder(sd, hp, tok):
    D = hp["flow.encoder.output_size"]
    H = hp["flow.encoder.attention_heads"]
    dk = D // H
    B = hp["flow.encoder.block_size"]
    x = sd["input_embedding.weight"][tok]  # [n, E]
    n = x.shape[0]
    x = F.layer_norm(F.linear(x, sd["encoder.embed.out.0.weight"], sd["encoder.embed.out.0.bias"]),
                     (D,), sd["encoder.embed.out.1.weight"], sd["encoder.embed.out.1.bias"], 1e-5)
    x = x * math.sqrt(D)
    pos = rel_pos(n, D)
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    allowed = (j <= i) | (j // B == i // B)
    for e in range(hp["flow.encoder.num_blocks"]):
        p = "encoder.encoders.%d." % e
        y = layer_norm(x, sd, p + "norm_mha")
        q = F.linear(y, sd[p + "self_attn.linear_q.weight"], sd[p + "self_attn.linear_q.bias"])
        k = F.linear(y, sd[p + "self_attn.linear_k.weight"], sd[p + "self_attn.linear_k.bias"])
        v = F.linear(y, sd[p + "self_attn.linear_v.weight"], sd[p + "self_attn.linear_v.bias"])
        pm = F.linear(pos, sd[p + "self_attn.linear_pos.weight"])
        q = q.view(n, H, dk).transpose(0, 1)
        k = k.view(n, H, dk).transpose(0, 1)
        v = v.view(n, H, dk).transpose(0, 1)
        pm = pm.view(2 * n - 1, H, dk).transpose(0, 1)
        qu = q + sd[p + "self_attn.pos_bias_u"][:, None, :]
        qv = q + sd[p + "self_attn.pos_bias_v"][:, None, :]
        ac = qu @ k.transpose(-1, -2)
        bd_raw = qv @ pm.transpose(-1, -2)  # [H, n, 2n-1]
        idx = (n - 1) - (i - j)  # [n, n]
        bd = torch.gather(bd_raw, 2, idx[None].expand(H, n, n))
        scores = (ac + bd) / math.sqrt(dk)
        scores = scores.masked_fill(~allowed[None], float("-inf"))
        attn = torch.softmax(scores, dim=-1).masked_fill(~allowed[None], 0.0)
        ctx = (attn @ v).transpose(0, 1).reshape(n, D)
        x = x + F.linear(ctx, sd[p + "self_attn.linear_out.weight"],
                         sd[p + "self_attn.linear_out.bias"])
        y = layer_norm(x, sd, p + "norm_ff")
        h = F.silu(F.linear(y, sd[p + "feed_forward.w_1.weight"], sd[p + "feed_forward.w_1.bias"]))
        x = x + F.linear(h, sd[p + "feed_forward.w_2.weight"], sd[p + "feed_forward.w_2.bias"])
    return layer_norm(x, sd, "encoder.after_norm")


def length_regulator(sd, hp, h, T):
    x = F.interpolate(h.t()[None], size=T, mode="nearest")
    L = hp["flow.length_regulator.n_layers"]
    for i in range(L):
        x = F.conv1d(x, sd["length_regulator.model.%d.weight" % (3 * i)],
                     sd["length_regulator.model.%d.bias" % (3 * i)], padding=1)
        x = F.group_norm(x, 1, sd["length_regulator.model.%d.weight" % (3 * i + 1)],
                         sd["length_regulator.model.%d.bias" % (3 * i + 1)], 1e-5)
        x = F.mish(x)
    x = F.conv1d(x, sd["length_regulator.model.%d.weight" % (3 * L)],
                 sd["length_regulator.model.%d.bias" % (3 * L)])
    return x[0]


def resnet(sd, p, x, temb):
    h = F.mish(F.group_norm(F.conv1d(x, sd[p + "block1.block.0.weight"],
                                     sd[p + "block1.block.0.bias"], padding=1), 8,
                            sd[p + "block1.block.1.weight"], sd[p + "block1.block.1.bias"], 1e-5))
    h = h + F.linear(F.mish(temb), sd[p + "mlp.1.weight"], sd[p + "mlp.1.bias"])[..., None]
    h = F.mish(F.group_norm(F.conv1d(h, sd[p + "block2.block.0.weight"],
                                     sd[p + "block2.block.0.bias"], padding=1), 8,
                            sd[p + "block2.block.1.weight"], sd[p + "block2.block.1.bias"], 1e-5))
    return h + F.conv1d(x, sd[p + "res_conv.weight"], sd[p + "res_conv.bias"])


def tblocks(sd, hp, p, x):
    """x [B, C, T] -> the same after n_blocks transformer blocks (time-major inside)."""
    z = x.transpose(1, 2)
    Bn, T, C = z.shape
    H = hp["flow.estimator.num_heads"]
    dh = hp["flow.estimator.attention_head_dim"]
    for j in range(hp["flow.estimator.n_blocks"]):
        t = p + "%d." % j
        y = F.layer_norm(z, (C,), sd[t + "norm1.weight"], sd[t + "norm1.bias"], 1e-5)
        q = F.linear(y, sd[t + "attn1.to_q.weight"]).view(Bn, T, H, dh).transpose(1, 2)
        k = F.linear(y, sd[t + "attn1.to_k.weight"]).view(Bn, T, H, dh).transpose(1, 2)
        v = F.linear(y, sd[t + "attn1.to_v.weight"]).view(Bn, T, H, dh).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + 1.0  # quirk Q3: the 0/1 mask added
        ctx = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(Bn, T, H * dh)
        z = z + F.linear(ctx, sd[t + "attn1.to_out.0.weight"], sd[t + "attn1.to_out.0.bias"])
        y = F.layer_norm(z, (C,), sd[t + "norm3.weight"], sd[t + "norm3.bias"], 1e-5)
        z = z + F.linear(F.gelu(F.linear(y, sd[t + "ff.net.0.proj.weight"],
                                         sd[t + "ff.net.0.proj.bias"])),
                         sd[t + "ff.net.2.weight"], sd[t + "ff.net.2.bias"])
    return z.transpose(1, 2)


def estimator(sd, hp, x, mu, t, spk, cond):
    """x, mu, cond [B, 80, T]; t scalar tensor; spk [B, 80] -> v [B, 80, T]."""
    p = "decoder.estimator."
    dim = hp["flow.estimator.in_channels"]
    half = dim // 2
    f = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    a = 1000 * t.reshape(1, 1) * f[None]
    temb = torch.cat([a.sin(), a.cos()], dim=-1)
    temb = F.linear(F.silu(F.linear(temb, sd[p + "time_mlp.linear_1.weight"],
                                    sd[p + "time_mlp.linear_1.bias"])),
                    sd[p + "time_mlp.linear_2.weight"], sd[p + "time_mlp.linear_2.bias"])
    T = x.shape[-1]
    X = torch.cat([x, mu, spk[:, :, None].expand(-1, -1, T), cond], dim=1)
    X = resnet(sd, p + "down_blocks.0.0.", X, temb)
    X = tblocks(sd, hp, p + "down_blocks.0.1.", X)
    s0 = X
    X = F.conv1d(X, sd[p + "down_blocks.0.2.conv.weight"], sd[p + "down_blocks.0.2.conv.bias"],
                 stride=2, padding=1)
    X = resnet(sd, p + "down_blocks.1.0.", X, temb)
    X = tblocks(sd, hp, p + "down_blocks.1.1.", X)
    s1 = X
    X = F.conv1d(X, sd[p + "down_blocks.1.2.weight"], sd[p + "down_blocks.1.2.bias"], padding=1)
    for i in range(hp["flow.estimator.num_mid_blocks"]):
        X = resnet(sd, p + "mid_blocks.%d.0." % i, X, temb)
        X = tblocks(sd, hp, p + "mid_blocks.%d.1." % i, X)
    X = torch.cat([X[:, :, :s1.shape[-1]], s1], dim=1)
    X = resnet(sd, p + "up_blocks.0.0.", X, temb)
    X = tblocks(sd, hp, p + "up_blocks.0.1.", X)
    X = F.conv_transpose1d(X, sd[p + "up_blocks.0.2.conv.weight"],
                           sd[p + "up_blocks.0.2.conv.bias"], stride=2, padding=1)
    X = torch.cat([X[:, :, :s0.shape[-1]], s0], dim=1)
    X = resnet(sd, p + "up_blocks.1.0.", X, temb)
    X = tblocks(sd, hp, p + "up_blocks.1.1.", X)
    X = F.conv1d(X, sd[p + "up_blocks.1.2.weight"], sd[p + "up_blocks.1.2.bias"], padding=1)
    X = F.mish(F.group_norm(F.conv1d(X, sd[p + "final_block.block.0.weight"],
                                     sd[p + "final_block.block.0.bias"], padding=1), 8,
                            sd[p + "final_block.block.1.weight"],
                            sd[p + "final_block.block.1.bias"], 1e-5))
    return F.conv1d(X, sd[p + "final_proj.weight"], sd[p + "final_proj.bias"])


def flow_inference(sd, hp, tokens, prompt_tokens, prompt_feat, noise_fn):
    """-> (new mel [80, T - P_feat], mu [80, T], h80 [n, 80]). prompt_feat [80, P_feat]."""
    e = torch.zeros(1, hp["flow.spk_embed_dim"])
    e = F.normalize(e, dim=1)
    spk = F.linear(e, sd["spk_embed_affine_layer.weight"], sd["spk_embed_affine_layer.bias"])
    tok = torch.tensor(list(prompt_tokens) + list(tokens), dtype=torch.long)
    n = len(tok)
    h = encoder(sd, hp, tok)
    h80 = F.linear(h, sd["encoder_proj.weight"], sd["encoder_proj.bias"])
    T = mel_len(n, hp)
    mu = length_regulator(sd, hp, h80, T)
    pf = prompt_feat.shape[1]
    cond = torch.zeros(80, T)
    cond[:, :pf] = prompt_feat
    x = noise_fn(T)
    ts = torch.linspace(0, 1, hp["flow.cfm.n_timesteps"] + 1)
    ts = 1 - torch.cos(ts * 0.5 * torch.pi)
    t, dt = ts[0], ts[1] - ts[0]
    rate = hp["flow.cfm.inference_cfg_rate"]
    for step in range(1, len(ts)):
        vc = estimator(sd, hp, x[None], mu[None], t, spk, cond[None])[0]
        vu = estimator(sd, hp, x[None], torch.zeros_like(mu)[None], t, torch.zeros_like(spk),
                       torch.zeros_like(cond)[None])[0]
        v = (1.0 + rate) * vc - rate * vu
        x = x + dt * v
        t = t + dt
        if step < len(ts) - 1:
            dt = ts[step + 1] - t
    return x[:, pf:], mu, h80


# ---- streaming token2wav (spec §7.4) ----------------------------------------------------------
def hamming68():
    k = np.arange(68)
    return 0.54 - 0.46 * np.cos(2 * np.pi * k / 67)


def t2w_reference(fsd, fhp, hsd, hhp, stream, schedule, end_by_user, noise_fn, src_noise_fn):
    """Replays the official client + token2wav bookkeeping (quirks Q1, Q2, Q4) over a token
    stream; returns the list of emitted chunks (numpy). Every call draws its noise from the
    given functions (called with the frame / sample counts)."""
    win = hamming68()
    O = 34
    state = {"overlap": None, "cache": None}
    prompt_tokens, returned = [], []
    chunks = []
    mels = []  # what each call handed back (the next call's prompt mel, Q4 included)

    def token2wav(block, finalize):
        pf = torch.from_numpy(np.concatenate(returned, axis=1)) if returned else torch.zeros(80, 0)
        m, _, _ = flow_inference(fsd, fhp, block, prompt_tokens, pf, noise_fn)
        m = m.clone()
        if state["overlap"] is not None:
            mm = m[:, :O].double().numpy()
            ov = state["overlap"].double().numpy()
            m[:, :O] = torch.from_numpy(mm * win[None, :O] + ov * win[None, O:]).float()
        cache_src = None
        if state["cache"] is not None:
            m = torch.cat([state["cache"][0], m], dim=1)
            cache_src = state["cache"][1]
        if not finalize:
            state["overlap"] = m[:, -O:].clone()
            m = m[:, :-O]
            T = m.shape[1]
            wave, src, _ = hift_forward(hsd, hhp, m, src_noise_fn(T), cache_src)
            state["cache"] = (m[:, -1:].clone(), src[-256:].clone())
            chunks.append(wave[:-256].numpy().copy())
        else:
            T = m.shape[1]
            wave, src, _ = hift_forward(hsd, hhp, m, src_noise_fn(T), cache_src)
            chunks.append(wave.numpy().copy())
        returned.append(m.numpy().copy())
        prompt_tokens.extend(block)
        mels.append(m.numpy().copy())

    pending = []
    bi = 0
    block_size = schedule[0]
    finalize = False
    for tk in list(stream) + (["<|user|>"] if end_by_user else []):
        # the official client: <|user|> sets finalize, then the dispatch check, then the
        # id is classified (text ids, -1 here, are not audio)
        if tk == "<|user|>":
            finalize = True
        if len(pending) >= block_size or (finalize and pending):
            token2wav(pending, finalize)
            pending = []
            bi += 1
            block_size = schedule[min(bi, len(schedule) - 1)]
        if not finalize and tk != -1:
            pending.append(tk)
    return chunks, mels


# ---- main --------------------------------------------------------------------------------------
def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "golden")
    src = os.path.join(out_dir, "voice_src")
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "config.yaml"), "w") as f:
        f.write(CONFIG)
    import convert_decoder
    cfg = convert_decoder.read_config(os.path.join(src, "config.yaml"))
    fhp = convert_decoder.flow_hparams(cfg, "config")
    hhp = convert_decoder.hift_hparams(cfg, "config")
    fsd = make_flow(fhp)
    hsd = make_hift(hhp)
    torch.save(fsd, os.path.join(src, "flow.pt"))
    torch.save(hsd, os.path.join(src, "hift.pt"))
    dec = os.path.join(out_dir, "voice_decoder.gguf")
    subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "convert.py"), src, dec],
                   check=True, stderr=subprocess.DEVNULL)

    w = gguf.Writer()

    def put(name, t):
        w.add_tensor(name, np.ascontiguousarray(
            t.numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float32))

    L = 256
    # HiFT: one call without and one with a cached source
    with torch.no_grad():
        for name, T, cached in (("hift_a", 24, False), ("hift_b", 17, True)):
            mel = randn(80, T, scale=1.0)
            noise = randn(hhp["hift.nb_harmonics"] + 1, T * L)
            cache = randn(1, 1, L, scale=0.3) if cached else None
            wave, s, f0 = hift_forward(hsd, hhp, mel, noise, cache)
            put(name + ".mel", mel)
            put(name + ".noise", noise)
            if cached:
                put(name + ".cache_src", cache[0, 0])
            put(name + ".wave", wave)
            put(name + ".source", s)
            put(name + ".f0", f0)
        w.add("hift.phases", [float(x) for x in (torch.manual_seed(42) and
                                                  torch.rand(9)).tolist()], gguf.FLOAT32)

        # flow: a first call, and a call with a prompt (tokens + mel)
        for name, n_new, n_prompt in (("flow_a", 23, 0), ("flow_b", 10, 14)):
            toks = rng.randint(0, fhp["flow.vocab_size"], n_new).tolist()
            ptoks = rng.randint(0, fhp["flow.vocab_size"], n_prompt).tolist()
            pfeat = randn(80, mel_len(n_prompt, fhp) + (1 if n_prompt else 0), scale=1.0)
            T = mel_len(n_new + n_prompt, fhp)
            noise = randn(80, T)
            mel, mu, h80 = flow_inference(fsd, fhp, toks, ptoks, pfeat, lambda t: noise.clone())
            w.add(name + ".tokens", toks or [0], gguf.INT32)
            w.add(name + ".prompt_tokens", ptoks or [0], gguf.INT32)
            w.add(name + ".n_tokens", len(toks), gguf.INT32)
            w.add(name + ".n_prompt", len(ptoks), gguf.INT32)
            if n_prompt:
                put(name + ".prompt_feat", pfeat)
            put(name + ".noise", noise)
            put(name + ".h80", h80)
            put(name + ".mu", mu)
            put(name + ".mel", mel)

        # streaming, reference mode: deterministic per-call noise (a function of the length)
        used = {}

        def noise_fn(T):
            r = np.random.RandomState(1000 + T)
            used["t2w_noise.flow.%d" % T] = r.standard_normal((80, T)).astype(np.float32)
            return torch.from_numpy(used["t2w_noise.flow.%d" % T])

        def src_noise_fn(T):
            r = np.random.RandomState(2000 + T)
            used["t2w_noise.src.%d" % T] = r.standard_normal((9, T * L)).astype(np.float32)
            return torch.from_numpy(used["t2w_noise.src.%d" % T])

        toks = rng.randint(0, fhp["flow.vocab_size"], 57).tolist()
        # a stream: audio ids >= 0, text ids as -1 (13 text, 26 audio, ... as the LM emits)
        stream = [-1] * 3 + toks[:26] + [-1] * 2 + toks[26:] + [-1]
        cases = []
        for name, sched, by_user in (("t2w_paper", [10, 20], True), ("t2w_main", [25, 50], True),
                                     ("t2w_q1", [10, 20], False),
                                     ("t2w_q2", [10, 20, 27], True)):
            chunks, mels = t2w_reference(fsd, fhp, hsd, hhp, stream, sched, by_user, noise_fn,
                                   src_noise_fn)
            cases.append(name)
            w.add(name + ".schedule", sched, gguf.INT32)
            w.add(name + ".end_by_user", int(by_user), gguf.INT32)
            w.add(name + ".chunk_lens", [len(c) for c in chunks], gguf.INT32)
            put(name + ".wave", np.concatenate(chunks))
            put(name + ".mel", np.concatenate(mels, axis=1))  # [80, frames]
        w.add("t2w.stream", stream, gguf.INT32)
        for name in sorted(used):
            put(name, used[name])
        w.add("t2w.cases", cases)
    w.write(os.path.join(out_dir, "voice_torch.gguf"))


if __name__ == "__main__":
    main()
