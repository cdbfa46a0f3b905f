"""Bad-input checks of the speech decoder converter (deploy/convert_decoder.py).

    /usr/bin/python3 tests/golden/voice_convert_errors.py [OUTDIR]    (default build/golden)

Runs after voice_torch.py has written OUTDIR/voice_src (it runs it when the directory is
missing), breaks copies of that directory one way at a time and checks that deploy/convert.py
refuses each with exit status 2 and one line naming the file and the problem. Writes nothing
that stays behind; exits non-zero (failing the test suite) on the first unexpected outcome.
"""
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "deploy"))
import convert  # noqa: E402  (deploy/convert.py, run in-process: one torch import)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "golden")
    src = os.path.join(out_dir, "voice_src")
    if not os.path.isdir(src):
        subprocess.run([sys.executable, os.path.join(HERE, "voice_torch.py"), out_dir], check=True)
    flow = torch.load(os.path.join(src, "flow.pt"))
    hift = torch.load(os.path.join(src, "hift.pt"))
    config = open(os.path.join(src, "config.yaml")).read()

    def drop(sd, key):
        sd = dict(sd)
        del sd[key]
        return sd

    def add(sd, key, value):
        sd = dict(sd)
        sd[key] = value
        return sd

    k_flow = "encoder.encoders.0.feed_forward.w_1.weight"
    cases = [
        ("missing tensor", None, drop(flow, k_flow), None, [], "missing tensor " + k_flow),
        ("unexpected tensor", None, add(flow, "extra.weight", torch.zeros(3)), None, [],
         "unexpected tensor extra.weight"),
        ("wrong shape", None, add(flow, k_flow, torch.zeros(3, 3)), None, [],
         "has shape [3, 3]"),
        ("weight_g alone", None, None, drop(hift, "conv_pre.weight_v"), [],
         "conv_pre.weight_g has no matching"),
        ("bad yaml", "flow: [unclosed\n", None, None, [], "not valid YAML"),
        ("unresolved ref", config.replace("!ref <spk_embed_dim>", "!ref <nope>"), None, None, [],
         "cannot resolve !ref <nope>"),
        ("unsupported activation", config.replace("act_fn: 'gelu'", "act_fn: 'snakebeta'"),
         None, None, [], "act_fn = 'snakebeta' is not supported"),
        ("missing key", config.replace("        block_size: 10\n", ""), None, None, [],
         "missing flow.encoder.block_size"),
        ("not a checkpoint", None, b"this is not a checkpoint", None, [],
         "not a PyTorch checkpoint"),
        ("weight type", None, None, None, ["--type", "f16"], "stored f32"),
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg, fsd, hsd, extra, want in cases:
            d = os.path.join(tmp, name.replace(" ", "_"))
            shutil.copytree(src, d)
            if cfg is not None:
                open(os.path.join(d, "config.yaml"), "w").write(cfg)
            if isinstance(fsd, bytes):
                open(os.path.join(d, "flow.pt"), "wb").write(fsd)
            elif fsd is not None:
                torch.save(fsd, os.path.join(d, "flow.pt"))
            if hsd is not None:
                torch.save(hsd, os.path.join(d, "hift.pt"))
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = convert.main([d, os.path.join(tmp, "out.gguf")] + extra)
            msg = err.getvalue().strip()
            if rc != 2 or want not in msg or len(msg.splitlines()) != 1:
                print("voice_convert_errors: %s: exit %d, message %r (want %r)"
                      % (name, rc, msg, want))
                failures += 1
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
