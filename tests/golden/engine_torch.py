"""The reference pipeline of one engine turn, for tests/unit/test_engine_golden.c.

    /usr/bin/python3 tests/golden/engine_torch.py [OUTDIR]      (default build/golden)

Reads the random checkpoints the sibling generators leave in OUTDIR (running a generator
first when its checkpoint is missing: tests/run.sh runs the generators in name order, and
this one comes before them):
  stok_ckpt_a/         speech tokenizer (stok_torch.py; converted to stok_a.gguf),
  lm_ckpt/             LM + tiktoken vocabulary (lm_torch.py; converted to lm_tiny_f32.gguf),
  voice_src/           flow + HiFT (voice_torch.py; converted to voice_decoder.gguf),
and runs, with the reference functions of those modules (spec §3, §5, §6, §7):

  audio turn: a 1.5 s 16 kHz waveform (a formula) -> speech tokens -> the chat template
      (audio mode, the audio system prompt) -> reference BPE with [gMASK]<sop> -> LM greedy
      (ids >= audio_offset + min(decoder vocab, n_audio) never chosen, as the engine masks
      them; stop at <|endoftext|> / <|user|> / <|observation|> or after MAX_NEW ids) -> the
      audio ids through the token-to-wave loop, twice:
        * clean: parley's default T2W_MODE_CLEAN bookkeeping (t2w.h: a block is dispatched
          as soon as it is full, the tail always flushed, the prompt mel without the cached
          frame, the prompt capped at 100 tokens) with the default schedule {10, 20};
        * reference: voice_torch.t2w_reference (the official client + token2wav, quirks
          Q1, Q2, Q4) with the same schedule, fed the audio ids as the engine feeds them;
  text turn: a "text:" question through the text template, LM greedy, clean token-to-wave.

Every decoder call draws its noise from deterministic functions of the call's length
(flow: [80][T] for T frames, HiFT source: [9][256 T]), recorded as noise.flow.T /
noise.src.T so that the C test hands the same tables to t2w's test hooks.

Writes OUTDIR/engine_torch.gguf:
  audio.pcm [n] (16 kHz), audio.rate, audio.user_tokens, audio.prompt_ids, audio.ids (the
  generated ids, with the stop id when one ended the turn), audio.max_new, audio.mask_from;
  for each wave W in audio.wave_clean, audio.wave_reference, text.wave_clean: the samples W,
  W_chunks (the length of each decoder output, in order) and W_n_chunks;
  text.question, text.prompt_ids, text.ids, text.max_new; noise.flow.T, noise.src.T; and how
  close the reference came to a different answer: lm.min_logit_gap (best minus second-best
  logit, smallest over both turns), stok.min_margin (relative VQ distance margin).
"""
import base64
import json
import os
import struct
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "deploy"))
import convert_decoder  # noqa: E402
import gguf  # noqa: E402
import lm_ref  # noqa: E402
import lm_torch  # noqa: E402
import stok_torch  # noqa: E402
import voice_torch  # noqa: E402

torch.set_num_threads(1)

IN_RATE = 16000
N_IN = 24000  # 1.5 s
MAX_NEW_AUDIO = 300
MAX_NEW_TEXT = 200
QUESTION = "What is the weather like today?"
SCHEDULE = [10, 20]  # t2w_config_default: the paper's schedule
PROMPT_CAP = 100  # t2w_config_default
HOP = 256


# ---- the sibling generators' checkpoints ----------------------------------------------------
def ensure(out_dir, path, generator):
    if not os.path.exists(os.path.join(out_dir, path)):
        subprocess.run([sys.executable, os.path.join(HERE, generator), out_dir], check=True)


def read_safetensors(path):
    """F32 / BF16 safetensors -> {name: float32 numpy}."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        raw = blob[h["data_offsets"][0]:h["data_offsets"][1]]
        if h["dtype"] == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif h["dtype"] == "BF16":
            a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit("%s: %s has dtype %s" % (path, name, h["dtype"]))
        out[name] = a.reshape(h["shape"]).copy()
    return out


def load_lm(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    index = json.load(open(os.path.join(d, "model.safetensors.index.json")))
    w = {}
    for shard in sorted(set(index["weight_map"].values())):
        for k, v in read_safetensors(os.path.join(d, shard)).items():
            w[k] = torch.from_numpy(v)
    tokens = []
    for line in open(os.path.join(d, "tokenizer.model"), "rb"):
        tok, rank = line.split()
        assert int(rank) == len(tokens)
        tokens.append(base64.b64decode(tok))
    dec = json.load(open(os.path.join(d, "tokenizer_config.json")))["added_tokens_decoder"]
    added = {v["content"]: int(k) for k, v in dec.items()}
    return cfg, w, lm_ref.Tokenizer(tokens, added)


def load_stok(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    return read_safetensors(os.path.join(d, "model.safetensors")), cfg


def load_voice(d):
    cfg = convert_decoder.read_config(os.path.join(d, "config.yaml"))
    fhp = convert_decoder.flow_hparams(cfg, "config")
    hhp = convert_decoder.hift_hparams(cfg, "config")
    fsd = torch.load(os.path.join(d, "flow.pt"))
    hsd = torch.load(os.path.join(d, "hift.pt"))
    return fsd, fhp, hsd, hhp


# ---- the LM turn -----------------------------------------------------------------------------
def greedy(w, cfg, ids, max_new, mask_from, stops):
    """Greedy ids over [0, mask_from) until a stop id (kept) or max_new ids; also the smallest
    gap between the best and the second-best logit (how close a flip would be)."""
    past = [None] * cfg["num_layers"]
    lg = lm_ref.forward(w, cfg, list(ids), False, past)[-1]
    out, gap = [], float("inf")
    while True:
        v = lg[:mask_from]
        top = torch.topk(v, 2).values
        gap = min(gap, float(top[0] - top[1]))
        t = int(torch.argmax(v))
        out.append(t)
        if t in stops or len(out) >= max_new:
            return out, gap
        lg = lm_ref.forward(w, cfg, [t], False, past)[-1]


# ---- token to wave, parley's clean mode (core/voice/t2w.c) -------------------------------------
class CleanT2W:
    """T2W_MODE_CLEAN over voice_torch's flow_inference / hift_forward: each block dispatched
    when full, the last one (or a flush of the held-back frames) at the end."""

    def __init__(self, fsd, fhp, hsd, hhp, noise_fn, src_noise_fn):
        self.f = (fsd, fhp)
        self.h = (hsd, hhp)
        self.noise_fn, self.src_noise_fn = noise_fn, src_noise_fn
        self.tokens, self.pending, self.chunks = [], [], []
        self.hist = np.zeros((80, 0), np.float32)
        self.overlap = None  # [80, 34]
        self.cache = None  # (mel [80, 1], source [256])
        self.block_index = 0
        self.win = voice_torch.hamming68()

    def _vocode(self, m):
        cache_src = None if self.cache is None else self.cache[1]
        wave, src, _ = voice_torch.hift_forward(self.h[0], self.h[1], m,
                                                self.src_noise_fn(m.shape[1]), cache_src)
        return wave, src

    def _decode(self, block, finalize):
        fsd, fhp = self.f
        P, n, n_hist = len(self.tokens), len(block), self.hist.shape[1]
        a, p_feat = 0, n_hist
        if PROMPT_CAP and P > PROMPT_CAP:  # whole 10-token attention blocks of the prompt go
            blk = fhp["flow.encoder.block_size"]
            a = (P - PROMPT_CAP + blk - 1) // blk * blk
            want_new = voice_torch.mel_len(P + n, fhp) - n_hist
            p_feat = max(0, voice_torch.mel_len(P - a + n, fhp) - want_new)
        feat = torch.from_numpy(self.hist[:, n_hist - p_feat:].copy())
        m, _, _ = voice_torch.flow_inference(fsd, fhp, block, self.tokens[a:], feat, self.noise_fn)
        m = m.clone()
        if self.overlap is not None:
            k = min(m.shape[1], 34)
            mm = m[:, :k].double().numpy()
            ov = self.overlap[:, :k].double().numpy()
            m[:, :k] = torch.from_numpy(mm * self.win[None, :k] + ov * self.win[None, 34:34 + k])
        pre = 0
        if self.cache is not None:
            m = torch.cat([self.cache[0], m], dim=1)
            pre = 1
        if not finalize:
            assert m.shape[1] > 35
            self.overlap = m[:, -34:].clone()
            m = m[:, :-34]
        else:
            self.overlap = None
        wave, src = self._vocode(m)
        self.hist = np.concatenate([self.hist, m[:, pre:].numpy()], axis=1)
        if not finalize:
            self.cache = (m[:, -1:].clone(), src[-HOP:].clone())
            self.chunks.append(wave[:-HOP].numpy().copy())
        else:
            self.cache = None
            self.chunks.append(wave.numpy().copy())
        self.tokens += block

    def push(self, token):
        self.pending.append(token)
        if len(self.pending) >= SCHEDULE[min(self.block_index, len(SCHEDULE) - 1)]:
            self._decode(self.pending, False)
            self.pending = []
            self.block_index += 1

    def end(self):
        if self.pending:
            self._decode(self.pending, True)
            self.pending = []
            return
        parts = ([self.cache[0]] if self.cache is not None else []) + \
            ([self.overlap] if self.overlap is not None else [])
        if not parts:
            return
        m = torch.cat(parts, dim=1)
        wave, _ = self._vocode(m)
        self.chunks.append(wave.numpy().copy())
        self.cache = self.overlap = None


# ---- main --------------------------------------------------------------------------------------
def input_wave():
    """1.5 s of two tones, float32. Chosen among a few such signals for a long answer of
    this tiny LM: 31 audio ids, so the decoder makes two full blocks (10, 20) and a last one."""
    i = np.arange(N_IN, dtype=np.float64)
    return (0.3 * np.sin(0.04 * i) + 0.05 * np.sin(0.37 * i)).astype(np.float32)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "golden")
    os.makedirs(out_dir, exist_ok=True)
    ensure(out_dir, "lm_ckpt/tokenizer_config.json", "lm_torch.py")
    ensure(out_dir, "stok_ckpt_a/model.safetensors", "stok_torch.py")
    ensure(out_dir, "voice_src/hift.pt", "voice_torch.py")
    cfg, w, tok = load_lm(os.path.join(out_dir, "lm_ckpt"))
    stok = load_stok(os.path.join(out_dir, "stok_ckpt_a"))
    fsd, fhp, hsd, hhp = load_voice(os.path.join(out_dir, "voice_src"))

    audio_offset = tok.added["<|audio_0|>"]
    n_audio = sum(1 for k in tok.added if k.startswith("<|audio_"))
    mask_from = audio_offset + min(fhp["flow.vocab_size"], n_audio)
    stops = set(cfg["eos_token_id"])
    user = tok.added["<|user|>"]

    used = {}

    def noise_fn(T):
        key = "noise.flow.%d" % T
        if key not in used:
            used[key] = np.random.RandomState(3000 + T).standard_normal((80, T)).astype(np.float32)
        return torch.from_numpy(used[key].copy())

    def src_noise_fn(T):
        key = "noise.src.%d" % T
        if key not in used:
            n = hhp["hift.nb_harmonics"] + 1
            used[key] = np.random.RandomState(4000 + T).standard_normal((n, T * HOP)).astype(
                np.float32)
        return torch.from_numpy(used[key].copy())

    def clean_wave(gen):
        t = CleanT2W(fsd, fhp, hsd, hhp, noise_fn, src_noise_fn)
        for i in gen:
            if i in stops:
                break
            if i >= audio_offset:
                t.push(i - audio_offset)
        t.end()
        return t.chunks

    g = gguf.Writer()

    def put_wave(name, chunks):
        g.add(name + "_chunks", [len(c) for c in chunks] or [0], gguf.INT32)
        g.add("%s_n_chunks" % name, len(chunks), gguf.INT32)
        g.add_tensor(name, np.concatenate(chunks) if chunks else np.zeros(1, np.float32))

    with torch.no_grad():
        # audio turn
        pcm = input_wave()
        _, _, out = stok_torch.tokenize([stok], torch.from_numpy(pcm))
        _, codes, margins = out[0]
        codes = [int(c) for c in codes]
        ids = tok.encode(lm_torch.audio_turn(codes), prefix=True)
        gen, gap_a = greedy(w, cfg, ids, MAX_NEW_AUDIO, mask_from, stops)
        audio_ids = [i - audio_offset for i in gen if i >= audio_offset and i not in stops]
        g.add_tensor("audio.pcm", pcm)
        g.add("audio.rate", IN_RATE, gguf.INT32)
        g.add("audio.user_tokens", codes, gguf.INT32)
        g.add("audio.prompt_ids", ids, gguf.INT32)
        g.add("audio.ids", gen, gguf.INT32)
        g.add("audio.max_new", MAX_NEW_AUDIO, gguf.INT32)
        g.add("audio.mask_from", mask_from, gguf.INT32)
        put_wave("audio.wave_clean", clean_wave(gen))
        ref_chunks, _ = voice_torch.t2w_reference(fsd, fhp, hsd, hhp, audio_ids, SCHEDULE,
                                                  gen[-1] == user, noise_fn, src_noise_fn)
        put_wave("audio.wave_reference", ref_chunks)

        # text turn
        tids = tok.encode(lm_torch.text_turn(QUESTION), prefix=True)
        tgen, gap_t = greedy(w, cfg, tids, MAX_NEW_TEXT, mask_from, stops)
        g.add("text.question", QUESTION)
        g.add("text.prompt_ids", tids, gguf.INT32)
        g.add("text.ids", tgen, gguf.INT32)
        g.add("text.max_new", MAX_NEW_TEXT, gguf.INT32)
        put_wave("text.wave_clean", clean_wave(tgen))

    g.add("lm.min_logit_gap", min(gap_a, gap_t), gguf.FLOAT32)
    g.add("stok.min_margin", float(margins.min()), gguf.FLOAT32)
    for name in sorted(used):
        g.add_tensor(name, used[name])
    g.write(os.path.join(out_dir, "engine_torch.gguf"))
    n_a = sum(1 for i in gen if i >= audio_offset and i not in stops)
    n_t = sum(1 for i in tgen if i >= audio_offset and i not in stops)
    print("engine_torch: audio turn %d user tokens, %d ids (%d audio, %s); text turn %d ids "
          "(%d audio, %s); smallest logit gap %.3g, VQ margin %.3g"
          % (len(codes), len(gen), n_a, "stop" if gen[-1] in stops else "length", len(tgen), n_t,
             "stop" if tgen[-1] in stops else "length", min(gap_a, gap_t), float(margins.min())))


if __name__ == "__main__":
    main()
