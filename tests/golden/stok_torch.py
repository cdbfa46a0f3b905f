"""PyTorch reference of the speech front-end and tokenizer, written from the spec (§2, §3,
errata E2, E3, E9), with real speech from espeak-ng.

    /usr/bin/python3 tests/golden/stok_torch.py [OUTDIR]     (default build/golden)

Writes into OUTDIR:
  stok_audio/*.wav     espeak-ng speech converted by sox: 8 / 11.025 (u8) / 16 / 22.05 /
                       44.1 (24-bit) / 48 kHz (float, stereo: another sentence on channel 1),
                       a 34 s clip whose last window's padding is 20 samples (errata E3), all
                       of lengths that are not multiples of 1280 samples;
  stok_audio/s16k.opus the s16k clip encoded to Ogg Opus (64 kbit/s) by libopusenc (through
                       ctypes: the library the build installs), for the Ogg Opus reader;
  stok_ckpt_a/, stok_ckpt_b/   tiny random-weight checkpoints in the released layout
                       (config.json + model.safetensors; a: bare names, 128 mel bins, one
                       head of the real size 64; b: `model.encoder.` names, 2 heads), with
                       the tensors the converter must drop (later layers, layer_norm,
                       embed_positions2, EMA buffers, a decoder tensor);
  stok_a.gguf, stok_b.gguf     those checkpoints converted by deploy/convert_tokenizer.py;
  stok_torch.gguf      the reference's results: per input rate the resampling kernel; per
                       clip the 16 kHz audio, the log-mel features of every window, the
                       pooled vectors and tokens of both models, the VQ margins.

The reference follows GV's extract_speech_token: torchaudio's resampler (kernel rebuilt here
with E2's float32 phase term), channel 0, 30 s windows batched and padded to the longest
rounded up to 1280 samples, transformers' Whisper log-mel (torch path), the WhisperVQ
encoder with its causal convs, block-causal attention mask with padding, average pooling and
the addmm VQ; tokens kept by the sample mask.
"""
import ctypes
import ctypes.util
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "deploy"))
import gguf  # noqa: E402
import convert_tokenizer  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else "build/golden"
AUDIO = os.path.join(OUT, "stok_audio")
torch.set_num_threads(2)
torch.manual_seed(0)
rng = np.random.RandomState(4)

TEXTS = [
    "The quick brown fox jumps over the lazy dog, while seven wizards judge the match.",
    "Speech tokens arrive twelve and a half times per second.",
]
WINDOW = 480000
SPT = 1280  # samples per token: hop 160 x conv stride 2 x pooling 4


# ---- audio --------------------------------------------------------------------------------

def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_audio():
    os.makedirs(AUDIO, exist_ok=True)
    a, b = os.path.join(AUDIO, "src_a.wav"), os.path.join(AUDIO, "src_b.wav")
    run(["espeak-ng", "-v", "en", "-s", "165", "-w", a, TEXTS[0]])
    run(["espeak-ng", "-v", "en-us", "-s", "180", "-p", "60", "-w", b, TEXTS[1]])
    clips = {}

    def sox(name, src, rate, samples, fmt, extra=(), pre=()):
        path = os.path.join(AUDIO, name + ".wav")
        # -D: no dither, so the files are the same on every run
        run(["sox", "-D", *pre, src, *fmt, path, "rate", "-h", str(rate), *extra,
             "trim", "0", "%ds" % samples])
        clips[name] = path

    sox("s16k", a, 16000, 16000 * 3 + 333, ["-b", "16"])
    sox("s8k", b, 8000, 8000 * 2 + 77, ["-b", "16"])
    sox("s11k_u8", b, 11025, 11025 * 2 + 5, ["-b", "8", "-e", "unsigned-integer"])
    sox("s22k", a, 22050, 22050 * 4 + 1, ["-b", "16"])
    sox("s44k_24", b, 44100, 44100 * 2 + 999, ["-b", "24"])
    sox("s48k_stereo", a, 48000, 48000 * 3 + 7, ["-b", "32", "-e", "floating-point"],
        pre=["-M", b])
    # > 30 s at 16 kHz; the last window is 64000 - 20 samples: its own padding to a
    # multiple of 1280 is 20 <= 40 samples (errata E3)
    n_long = WINDOW + 64000 - 20
    sox("long16k", a, 16000, n_long, ["-b", "16"], extra=["repeat", "6"])
    for p in (a, b):
        os.remove(p)
    return clips


def make_opus(wav_path, out_path):
    """Encodes a mono PCM16 WAV to Ogg Opus with libopusenc (fixed serial number, fixed
    bitrate: the same bytes on every run). Returns the OpusHead pre-skip."""
    lib = ctypes.CDLL(ctypes.util.find_library("opusenc") or "libopusenc.so.0")
    lib.ope_comments_create.restype = ctypes.c_void_p
    lib.ope_encoder_create_file.restype = ctypes.c_void_p
    lib.ope_encoder_create_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int32,
                                            ctypes.c_int, ctypes.c_int,
                                            ctypes.POINTER(ctypes.c_int)]
    lib.ope_encoder_write.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.ope_encoder_drain.argtypes = [ctypes.c_void_p]
    lib.ope_encoder_destroy.argtypes = [ctypes.c_void_p]
    lib.ope_comments_destroy.argtypes = [ctypes.c_void_p]
    lib.ope_encoder_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int32]
    rate = int(subprocess.check_output(["soxi", "-r", wav_path]).decode().strip())
    pcm = subprocess.check_output(["sox", "-D", wav_path, "-t", "raw", "-e", "signed-integer",
                                   "-b", "16", "-c", "1", "-"])
    x = np.frombuffer(pcm, dtype="<i2").copy()
    comments = lib.ope_comments_create()
    err = ctypes.c_int(0)
    enc = lib.ope_encoder_create_file(out_path.encode(), comments, rate, 1, 0,
                                      ctypes.byref(err))
    if not enc:
        raise RuntimeError("libopusenc: cannot create %s (error %d)" % (out_path, err.value))
    assert lib.ope_encoder_ctl(enc, 14006, 1234) == 0  # OPE_SET_SERIALNO
    assert lib.ope_encoder_ctl(enc, 4002, 64000) == 0  # OPUS_SET_BITRATE
    assert lib.ope_encoder_write(enc, x.ctypes.data, x.shape[0]) == 0
    assert lib.ope_encoder_drain(enc) == 0
    lib.ope_encoder_destroy(enc)
    lib.ope_comments_destroy(comments)
    with open(out_path, "rb") as f:
        head = f.read(64)
    i = head.find(b"OpusHead")
    return struct.unpack("<H", head[i + 10:i + 12])[0], x.shape[0], rate


def load(path):
    """sox decodes (integers / 2^(bits-1), u8 as (u-128)/128): float32 [C, L], rate."""
    rate = int(subprocess.check_output(["soxi", "-r", path]).decode().strip())
    ch = int(subprocess.check_output(["soxi", "-c", path]).decode().strip())
    raw = subprocess.check_output(["sox", "-D", path, "-t", "raw", "-e", "floating-point",
                                   "-b", "32", "-"])
    x = np.frombuffer(raw, dtype="<f4").reshape(-1, ch).T.copy()
    return torch.from_numpy(x), rate


# ---- resampling (torchaudio 2.3 sinc_interp_hann, defaults; errata E2) --------------------

def resample_kernel(o, n, width_lp=6, rolloff=0.99):
    base = min(o, n) * rolloff
    width = math.ceil(width_lp * o / base)
    idx = torch.arange(-width, width + o, dtype=torch.float64)[None, None] / o
    t = torch.arange(0, -n, -1)[:, None, None] / n + idx  # int64 / int: float32 (E2)
    t *= base
    t = t.clamp_(-width_lp, width_lp)
    window = torch.cos(t * math.pi / width_lp / 2) ** 2
    t *= math.pi
    scale = base / o
    k = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    k *= window * scale
    return k.to(torch.float32), width


def resample(x, rate):
    g = math.gcd(rate, 16000)
    o, n = rate // g, 16000 // g
    k, width = resample_kernel(o, n)
    length = x.shape[-1]
    xp = F.pad(x, (width, width + o))
    y = F.conv1d(xp[:, None], k, stride=o)  # [C, n, steps]
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    return y[..., :math.ceil(n * length / o)], k[:, 0, :]


# ---- Whisper log-mel (transformers' torch path; E9) ---------------------------------------

def hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    m = 3.0 * f / 200.0
    logstep = 27.0 / np.log(6.4)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-300) / 1000.0) * logstep, m)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f = 200.0 * m / 3.0
    logstep = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), f)


def mel_filters(n_bins=201, n_mels=128, sr=16000):
    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(sr // 2), n_mels + 2)
    ff = mel_to_hz(mels)
    fft = np.linspace(0, sr // 2, n_bins)
    diff = np.diff(ff)
    slopes = ff[None, :] - fft[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    fb = np.maximum(np.zeros(1), np.minimum(down, up))
    fb *= (2.0 / (ff[2:n_mels + 2] - ff[:n_mels]))[None, :]
    return fb  # [201, 128] float64


FILTERS = torch.from_numpy(mel_filters()).to(torch.float32)


def log_mel(batch):
    window = torch.hann_window(400)
    stft = torch.stft(batch, 400, 160, window=window, return_complex=True)
    mag = stft[..., :-1].abs() ** 2
    mel = FILTERS.T @ mag
    log = torch.clamp(mel, min=1e-10).log10()
    mx = log.max(dim=2, keepdim=True)[0].max(dim=1, keepdim=True)[0]
    log = torch.maximum(log, mx - 8.0)
    return (log + 4.0) / 4.0


# ---- checkpoints --------------------------------------------------------------------------

def sinusoids(length, channels):
    inc = np.log(10000) / (channels // 2 - 1)
    inv = np.exp(-inc * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def make_checkpoint(path, d, heads, ffn, layers, q_pos, vocab, prefix, n_mels=128):
    def rn(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    sd = {"conv1.weight": rn(d, n_mels, 3, s=1 / math.sqrt(3 * n_mels)),
          "conv1.bias": rn(d, s=0.1),
          "conv2.weight": rn(d, d, 3, s=1 / math.sqrt(3 * d)),
          "conv2.bias": rn(d, s=0.1),
          "embed_positions.weight": sinusoids(1500, d),
          "embed_positions2.weight": sinusoids(375, d),
          "layer_norm.weight": rn(d, s=0.1) + 1, "layer_norm.bias": rn(d, s=0.1),
          "codebook.weight": rn(vocab, d, s=1.0),
          "ema_count": np.abs(rn(vocab)), "ema_weight": rn(vocab, d)}
    for i in range(layers):
        p = "layers.%d." % i
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[p + "self_attn.%s.weight" % n] = rn(d, d, s=1 / math.sqrt(d))
            if n != "k_proj":
                sd[p + "self_attn.%s.bias" % n] = rn(d, s=0.1)
        for n in ("self_attn_layer_norm", "final_layer_norm"):
            sd[p + n + ".weight"] = rn(d, s=0.2) + 1
            sd[p + n + ".bias"] = rn(d, s=0.1)
        sd[p + "fc1.weight"] = rn(ffn, d, s=1 / math.sqrt(d))
        sd[p + "fc1.bias"] = rn(ffn, s=0.1)
        sd[p + "fc2.weight"] = rn(d, ffn, s=1 / math.sqrt(ffn))
        sd[p + "fc2.bias"] = rn(d, s=0.1)
    cfg = {"architectures": ["WhisperVQEncoder"], "model_type": "whisper",
           "num_mel_bins": n_mels, "d_model": d, "encoder_attention_heads": heads,
           "encoder_ffn_dim": ffn, "encoder_layers": layers, "decoder_layers": 1,
           "max_source_positions": 1500, "activation_function": "gelu",
           "encoder_causal_convolution": True, "encoder_causal_attention": False,
           "quantize_causal_encoder": False, "quantize_causal_block_size": 200,
           "quantize_position": q_pos, "quantize_vocab_size": vocab, "quantize_ema_decay": 0.99,
           "pooling_kernel_size": 4, "pooling_type": "avg", "pooling_position": q_pos,
           "quantize_encoder_only": True, "torch_dtype": "float32"}
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    stored = {(prefix + k): v for k, v in sd.items()}
    if prefix:
        stored["model.decoder.embed_tokens.weight"] = rn(8, d)
    write_safetensors(os.path.join(path, "model.safetensors"), stored)
    return sd, cfg


def write_safetensors(path, tensors):
    header, off, blobs = {}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a.tobytes())
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---- the encoder (spec §3.3) --------------------------------------------------------------

def encode(sd, cfg, feats, mask_mel):
    """feats [B, M, Tm], mask_mel [B, Tm] -> pooled [B, T/4, D], tokens [B, T/4], margins."""
    t = lambda n: torch.from_numpy(sd[n])  # noqa: E731
    d, heads = cfg["d_model"], cfg["encoder_attention_heads"]
    x = F.gelu(F.conv1d(F.pad(feats, (2, 0)), t("conv1.weight"), t("conv1.bias")))
    x = F.gelu(F.conv1d(F.pad(x, (2, 0)), t("conv2.weight"), t("conv2.bias"), stride=2))
    x = x.permute(0, 2, 1)
    bsz, n, _ = x.shape
    x = x + t("embed_positions.weight")[:n]
    m_enc = mask_mel[:, ::2].bool()
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    blk = cfg["quantize_causal_block_size"]
    allowed = ((j <= i) | (j // blk == i // blk))[None] & m_enc[:, None, :]
    bias = torch.zeros(bsz, 1, n, n).masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
    hd = d // heads
    for li in range(cfg["quantize_position"]):
        p = "layers.%d." % li
        h = F.layer_norm(x, (d,), t(p + "self_attn_layer_norm.weight"),
                         t(p + "self_attn_layer_norm.bias"), 1e-5)
        q = F.linear(h, t(p + "self_attn.q_proj.weight"), t(p + "self_attn.q_proj.bias"))
        k = F.linear(h, t(p + "self_attn.k_proj.weight"))
        v = F.linear(h, t(p + "self_attn.v_proj.weight"), t(p + "self_attn.v_proj.bias"))
        q, k, v = (z.view(bsz, n, heads, hd).transpose(1, 2) for z in (q, k, v))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + bias
        a = torch.softmax(s, dim=-1) @ v
        a = a.transpose(1, 2).reshape(bsz, n, d)
        x = x + F.linear(a, t(p + "self_attn.out_proj.weight"), t(p + "self_attn.out_proj.bias"))
        h = F.layer_norm(x, (d,), t(p + "final_layer_norm.weight"), t(p + "final_layer_norm.bias"),
                         1e-5)
        h = F.linear(F.gelu(F.linear(h, t(p + "fc1.weight"), t(p + "fc1.bias"))),
                     t(p + "fc2.weight"), t(p + "fc2.bias"))
        x = x + h
    pooled = F.avg_pool1d(x.transpose(1, 2), cfg["pooling_kernel_size"]).transpose(1, 2)
    cb = t("codebook.weight")
    flat = pooled.reshape(-1, d)
    dist = torch.addmm(torch.sum(cb ** 2, dim=1) + torch.sum(flat ** 2, dim=1, keepdim=True),
                       flat, cb.t(), alpha=-2.0, beta=1.0)
    _, idx = torch.min(dist, dim=1)
    two = torch.topk(dist, 2, dim=1, largest=False)[0]
    margin = (two[:, 1] - two[:, 0]) / two[:, 0].abs().clamp(min=1e-30)
    return pooled, idx.view(bsz, -1), margin.view(bsz, -1)


def tokenize(models, audio16):
    """extract_speech_token for one utterance: windows, batch, features, tokens."""
    wins = [audio16[s:s + WINDOW] for s in range(0, audio16.shape[0], WINDOW)]
    l_pad = -(-max(w.shape[0] for w in wins) // SPT) * SPT
    batch = torch.zeros(len(wins), l_pad)
    mask = torch.zeros(len(wins), l_pad, dtype=torch.int32)
    for i, w in enumerate(wins):
        batch[i, :w.shape[0]] = w
        mask[i, :w.shape[0]] = 1
    feats = log_mel(batch)
    mask_mel = mask[:, ::160]
    keep = mask[:, ::SPT].bool()
    out = []
    for sd, cfg in models:
        pooled, idx, margin = encode(sd, cfg, feats, mask_mel)
        out.append((torch.cat([pooled[i][keep[i]] for i in range(len(wins))]),
                    torch.cat([idx[i][keep[i]] for i in range(len(wins))]),
                    torch.cat([margin[i][keep[i]] for i in range(len(wins))])))
    return [feats[i, :, :w.shape[0] // 160 + (1 if w.shape[0] % 160 else 0)]
            for i, w in enumerate(wins)], feats, out


def main():
    os.makedirs(OUT, exist_ok=True)
    clips = make_audio()
    models = []
    for name, args in (("a", dict(d=64, heads=1, ffn=256, layers=3, q_pos=2, vocab=256, prefix="")),
                       ("b", dict(d=128, heads=2, ffn=512, layers=2, q_pos=2, vocab=512,
                                  prefix="model.encoder."))):
        ckpt = os.path.join(OUT, "stok_ckpt_" + name)
        models.append(make_checkpoint(ckpt, **args))

        class A:
            type = None
        convert_tokenizer.convert(ckpt, os.path.join(OUT, "stok_%s.gguf" % name), A)

    w = gguf.Writer()
    names = sorted(clips)
    w.add("stok_torch.clips", names)
    kernels = {}
    worst_margin = 1.0
    for name in names:
        x, rate = load(clips[name])
        w.add("%s.rate" % name, rate, gguf.UINT32)
        w.add("%s.channels" % name, x.shape[0], gguf.UINT32)
        w.add("%s.frames" % name, x.shape[1], gguf.UINT32)
        w.add_tensor("%s.ch0" % name, x[0].numpy())
        if rate != 16000:
            y, k = resample(x, rate)
            if rate not in kernels:
                kernels[rate] = k
                w.add_tensor("kernel.%d" % rate, k.numpy())
            x = y
        audio16 = x[0]
        w.add_tensor("%s.audio16" % name, audio16.numpy())
        _, feats, out = tokenize(models, audio16)
        w.add("%s.windows" % name, feats.shape[0], gguf.UINT32)
        for i in range(feats.shape[0]):
            w.add_tensor("%s.mel%d" % (name, i), feats[i].numpy())  # [128, Tm of the batch]
        for (pooled, idx, margin), m in zip(out, "ab"):
            w.add_tensor("%s.pooled_%s" % (name, m), pooled.numpy())
            w.add_tensor("%s.tokens_%s" % (name, m), idx.numpy().astype(np.float32))
            w.add_tensor("%s.margin_%s" % (name, m), margin.numpy())
            worst_margin = min(worst_margin, float(margin.min()))
    w.add("stok_torch.kernel_rates", sorted(kernels), gguf.UINT32)
    pre_skip, n_src, src_rate = make_opus(clips["s16k"], os.path.join(AUDIO, "s16k.opus"))
    w.add("opus.pre_skip", pre_skip, gguf.UINT32)
    w.add("opus.source_frames", n_src, gguf.UINT32)
    w.add("opus.source_rate", src_rate, gguf.UINT32)
    w.write(os.path.join(OUT, "stok_torch.gguf"))
    print("stok_torch: %d clips, smallest relative VQ margin %.3g" % (len(names), worst_margin))


if __name__ == "__main__":
    main()
