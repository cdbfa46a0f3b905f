"""PyTorch golden vectors for the conv, resize, vq and spectral kernels.

    /usr/bin/python3 tests/golden/conv_torch.py [OUTDIR]     (default build/golden)

writes OUTDIR/conv_torch.gguf, which tests/unit/test_golden_conv.c checks. The plain C
references in tests/ref/ could share a misunderstanding with the fast code; these vectors come
from PyTorch itself: F.conv1d (causal via F.pad, stride, dilation, groups, reflect padding),
F.conv_transpose1d at HiFT's and the flow decoder's upsampling parameters, F.avg_pool1d after
the tokenizer's right zero-pad, F.interpolate(mode='nearest') to odd sizes and by a scale
factor, torch.stft / torch.istft with HiFT's (16/4) and Whisper's (400/160) parameters, and
the tokenizer's VQ distance (addmm) with torch.min.

Layout of the file: key "conv_torch.cases" lists the case names; for case C, key "C.op" names
the operation and "C.<param>" keys hold its integer parameters; tensors "C.<name>" hold inputs
and outputs in PyTorch shape order (batch dimension dropped). Index outputs are stored as f32
(exact below 2^24).
"""
import math
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy"))
import gguf  # noqa: E402  (deploy/gguf.py)

warnings.filterwarnings("ignore", message="The length of signal is shorter")  # istft_len: on purpose
rng = np.random.RandomState(20240611)
writer = gguf.Writer()
cases = []


def randn(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def case(name, op, params, tensors):
    cases.append(name)
    writer.add(name + ".op", op)
    for key, value in params.items():
        writer.add("%s.%s" % (name, key), int(value), gguf.INT64)
    for key, value in tensors.items():
        writer.add_tensor("%s.%s" % (name, key), np.ascontiguousarray(value, dtype=np.float32))


# ---- conv1d ------------------------------------------------------------------------------
def conv1d(name, c_in, c_out, k, t, stride=1, dilation=1, pad_left=0, pad_right=0, groups=1,
           reflect=False, bias=True):
    x = randn(c_in, t)
    w = randn(c_out, c_in // groups, k, scale=1.0 / math.sqrt(c_in // groups * k))
    b = randn(c_out) if bias else None
    xt = torch.from_numpy(x)[None]
    if reflect:
        xt = F.pad(xt, (pad_left, pad_right), mode="reflect")
        y = F.conv1d(xt, torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                     stride=stride, dilation=dilation, groups=groups)
    elif pad_left == pad_right:
        y = F.conv1d(xt, torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                     stride=stride, padding=pad_left, dilation=dilation, groups=groups)
    else:  # causal: F.pad as the tokenizer's CausalConv1d does
        y = F.conv1d(F.pad(xt, (pad_left, pad_right)), torch.from_numpy(w),
                     None if b is None else torch.from_numpy(b), stride=stride,
                     dilation=dilation, groups=groups)
    tensors = {"x": x, "w": w, "y": y[0].numpy()}
    if b is not None:
        tensors["b"] = b
    case(name, "conv1d", dict(c_in=c_in, c_out=c_out, k=k, stride=stride, dilation=dilation,
                              pad_left=pad_left, pad_right=pad_right, groups=groups,
                              reflect=int(reflect), t_in=t), tensors)


conv1d("c1_stem1", 16, 24, 3, 37, pad_left=2)                  # tokenizer conv1: causal
conv1d("c1_stem2", 24, 24, 3, 37, stride=2, pad_left=2)        # conv2: causal, stride 2, odd T
conv1d("c1_res_d3", 12, 12, 7, 50, dilation=3, pad_left=9, pad_right=9)   # HiFT resblock
conv1d("c1_res_d5", 8, 8, 11, 64, dilation=5, pad_left=25, pad_right=25)
conv1d("c1_groups", 6, 9, 5, 23, stride=2, pad_left=2, pad_right=2, groups=3)
conv1d("c1_srcdown", 18, 32, 16, 64 * 3 + 1, stride=8, pad_left=4, pad_right=4)  # source_downs0
conv1d("c1_reflect", 5, 7, 7, 20, pad_left=3, pad_right=3, reflect=True)
conv1d("c1_flow", 256, 256, 3, 68, pad_left=1, pad_right=1)    # flow estimator, real channels
conv1d("c1_down", 32, 32, 3, 69, stride=2, pad_left=1, pad_right=1)  # Downsample1D
conv1d("c1_1x1", 40, 18, 1, 33, bias=False)
conv1d("c1_post", 128, 18, 7, 129, pad_left=3, pad_right=3)   # conv_post


# ---- conv_transpose1d --------------------------------------------------------------------
def conv_t(name, c_in, c_out, k, t, stride, pad, out_pad=0, dilation=1):
    x = randn(c_in, t)
    w = randn(c_in, c_out, k, scale=1.0 / math.sqrt(c_in * k / stride))
    b = randn(c_out)
    y = F.conv_transpose1d(torch.from_numpy(x)[None], torch.from_numpy(w), torch.from_numpy(b),
                           stride=stride, padding=pad, output_padding=out_pad, dilation=dilation)
    case(name, "conv_transpose1d", dict(c_in=c_in, c_out=c_out, k=k, stride=stride, pad=pad,
                                        out_pad=out_pad, dilation=dilation, t_in=t),
         {"x": x, "w": w, "b": b, "y": y[0].numpy()})


conv_t("ct_ups0", 64, 32, 16, 13, 8, 4)         # HiFT ups.0: k16 s8 p4 (channels reduced)
conv_t("ct_ups1", 32, 16, 16, 104, 8, 4)        # HiFT ups.1
conv_t("ct_flow", 256, 256, 4, 34, 2, 1)        # flow Upsample1D: k4 s2 p1, real channels
conv_t("ct_outpad", 5, 7, 3, 11, 2, 1, out_pad=1)
conv_t("ct_dil", 4, 3, 3, 10, 1, 2, out_pad=1, dilation=2)

# ---- avg_pool1d (tokenizer: zero-pad the ragged tail to a multiple of 4, then pool) ------
for name, t in (("ap_ragged", 30), ("ap_even", 28)):
    x = randn(8, t)
    pad = (4 - t % 4) % 4
    y = F.avg_pool1d(F.pad(torch.from_numpy(x)[None], (0, pad)), 4, 4)
    case(name, "avg_pool1d", dict(c=8, t_in=t, k=4, stride=4, pad_right=pad),
         {"x": x, "y": y[0].numpy()})

# ---- nearest interpolation -----------------------------------------------------------------
n_tok = 26
t_mel = int(np.float32(n_tok) / np.float32(12.5) * np.float32(22050) / np.float32(256))  # 179
for name, t_in, t_out in (("up_lr", n_tok, t_mel), ("up_quirk", 2, 82), ("up_odd", 13, 89),
                          ("up_down", 89, 13), ("up_x2", 9, 18)):
    x = randn(3, t_in)
    y = F.interpolate(torch.from_numpy(x)[None], size=t_out, mode="nearest")
    case(name, "interpolate", dict(c=3, t_in=t_in, t_out=t_out, factor=0),
         {"x": x, "y": y[0].numpy()})
for name, factor in (("up_f0", 256), ("up_f3", 3)):
    x = randn(1, 7)
    y = torch.nn.Upsample(scale_factor=factor)(torch.from_numpy(x)[None])
    case(name, "interpolate", dict(c=1, t_in=7, t_out=7 * factor, factor=factor),
         {"x": x, "y": y[0].numpy()})

# ---- STFT / iSTFT ---------------------------------------------------------------------------
# HiFT's window: scipy get_window('hann', 16, fftbins=True) in float64, cast to float32
hift_win = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(16) / 16)).astype(np.float32)
whisper_win = torch.hann_window(400).numpy()  # float32, as WhisperFeatureExtractor
case("hann_400", "window", dict(n=400, periodic=1, torch=1), {"w": whisper_win})
case("hann_400s", "window", dict(n=400, periodic=0, torch=1),
     {"w": torch.hann_window(400, periodic=False).numpy()})
case("hann_16", "window", dict(n=16, periodic=1, torch=0), {"w": hift_win})


def stft(name, x, n_fft, hop, win, power=False, drop_last=False):
    s = torch.stft(torch.from_numpy(x), n_fft, hop, n_fft, window=torch.from_numpy(win),
                   center=True, pad_mode="reflect", normalized=False, onesided=True,
                   return_complex=True)
    spec = torch.cat([s.real, s.imag], 0).numpy()  # HiFT: channel-concat of Re and Im
    tensors = {"x": x, "window": win, "y": spec}
    if power:
        tensors["power"] = (s[..., :-1].abs() ** 2).numpy()  # Whisper drops the last frame
    case(name, "stft", dict(n_fft=n_fft, hop=hop, l=len(x), frames=spec.shape[1]), tensors)


stft("stft_hift", randn(256 * 3), 16, 4, hift_win)
stft("stft_hift_odd", randn(1001), 16, 4, hift_win)
stft("stft_whisper", randn(1280 * 4, scale=0.1), 400, 160, whisper_win, power=True)


def istft(name, frames, n_fft, hop, win, length=None):
    bins = n_fft // 2 + 1
    raw = randn(2 * bins, frames)
    # HiFT's output head: magnitude = exp(x[:9]) clipped at 100, phase = sin(x[9:])
    mag = torch.clamp(torch.exp(torch.from_numpy(raw[:bins])), max=1e2)
    phase = torch.sin(torch.from_numpy(raw[bins:]))
    real, imag = mag * torch.cos(phase), mag * torch.sin(phase)
    y = torch.istft(torch.complex(real, imag), n_fft, hop, n_fft, window=torch.from_numpy(win),
                    center=True, length=length)
    spec = torch.cat([real, imag], 0).numpy()
    case(name, "istft", dict(n_fft=n_fft, hop=hop, frames=frames,
                             length=-1 if length is None else length),
         {"spec": spec, "window": win, "y": y.numpy()})


istft("istft_hift", 64 * 3 + 1, 16, 4, hift_win)                 # -> 768 = 256 T samples
istft("istft_len", 40, 16, 4, hift_win, length=200)                # longer: zero tail
istft("istft_whisper", 12, 400, 160, whisper_win)

# ---- VQ (GV vector_quantize: addmm(codebook_sqr + inputs_sqr, x, codebook^T, -2, 1)) --------
n, j, d = 50, 1000, 64
codebook = randn(j, d)
codebook[700] = codebook[100]  # duplicates: the lower index must win
codebook[999] = codebook[5]
x = randn(n, d)
x[0], x[1], x[2] = codebook[100], codebook[5], codebook[999]
x[3] = codebook[100] + randn(d, scale=1e-3)
xt, ct = torch.from_numpy(x), torch.from_numpy(codebook)
dist = torch.addmm(torch.sum(ct ** 2, dim=1) + torch.sum(xt ** 2, dim=1, keepdim=True), xt, ct.t(),
                   alpha=-2.0, beta=1.0)
_, idx = torch.min(dist, dim=1)
case("vq", "vq", dict(n=n, j=j, d=d),
     {"x": x, "codebook": codebook, "dist": dist.numpy(), "idx": idx.numpy().astype(np.float32)})

writer.add("conv_torch.cases", cases)
outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join("build", "golden")
os.makedirs(outdir, exist_ok=True)
writer.write(os.path.join(outdir, "conv_torch.gguf"))
print("wrote %s (%d cases)" % (os.path.join(outdir, "conv_torch.gguf"), len(cases)))
