#!/usr/bin/env python3
"""Converts a released GLM-4-Voice component directory into a parley GGUF file.

    deploy/convert.py SRC_DIR OUT.gguf [--type f32|f16|bf16|q8_0]

SRC_DIR is recognised by what it holds:
  language model   config.json (ChatGLM) + sharded *.safetensors + index json + tokenizer files
  speech tokenizer config.json (WhisperVQ) + model.safetensors
  speech decoder   config.yaml + flow.pt + hift.pt

Each component's converter lives in deploy/convert_<component>.py and provides
`detect(src_dir) -> bool` and `convert(src_dir, out_path, args) -> None`; it raises
ConvertError with a message naming the file and what is wrong.
"""
import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from convert_common import ConvertError  # noqa: E402

COMPONENTS = ["lm", "tokenizer", "decoder"]


def available_components():
    found = []
    for name in COMPONENTS:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "convert_%s.py" % name)
        if os.path.exists(path):
            found.append((name, importlib.import_module("convert_" + name)))
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src_dir", help="a released component directory")
    ap.add_argument("out", help="the GGUF file to write")
    ap.add_argument("--type", default=None, choices=["f32", "f16", "bf16", "q8_0"],
                    help="weight type of the large matrices (default: the component's own)")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.src_dir):
        print("convert: %s: not a directory" % args.src_dir, file=sys.stderr)
        return 2
    components = available_components()
    matches = [(n, m) for n, m in components if m.detect(args.src_dir)]
    if not matches:
        known = ", ".join(n for n, _ in components) or "none"
        print("convert: %s: not a GLM-4-Voice component directory this converter knows "
              "(components: %s)" % (args.src_dir, known), file=sys.stderr)
        return 2
    name, module = matches[0]
    try:
        module.convert(args.src_dir, args.out, args)
    except ConvertError as e:
        print("convert: %s" % e, file=sys.stderr)
        return 2
    print("convert: wrote %s (%s)" % (args.out, name), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
