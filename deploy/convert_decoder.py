"""Speech decoder converter: the released `glm-4-voice-decoder` directory (config.yaml,
flow.pt, hift.pt) to one GGUF holding the flow-matching decoder and the HiFT vocoder.

    deploy/convert.py glm-4-voice-decoder/ decoder.gguf

config.yaml is HyperPyYAML (tags such as !new:..., !ref <name>); it is read with a plain YAML
loader that keeps the mappings under any tag and resolves !ref against the top level.
flow.pt and hift.pt are PyTorch state dicts (any zip or legacy format torch.load accepts,
spec errata E11). HiFT's weight norm (weight_g, weight_v) is folded into plain weights with
PyTorch's own torch._weight_norm, so the C code reads `weight`. Every tensor is stored f32
under its checkpoint name prefixed with "flow." or "hift."; the hyperparameters become
"flow.*" / "hift.*" metadata keys. Loading is strict: a missing, unexpected or misshapen
tensor is an error naming it.
"""
import os
import re

import numpy as np

import gguf
from convert_common import ConvertError

FILES = ("config.yaml", "flow.pt", "hift.pt")


def detect(src_dir):
    return all(os.path.isfile(os.path.join(src_dir, n)) for n in FILES)


# ---- config.yaml -----------------------------------------------------------------------------

def read_config(path):
    try:
        import yaml
    except ImportError:
        raise ConvertError("%s: reading it needs PyYAML (apt-get install python3-yaml)" % path)

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader, suffix, node):
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        value = loader.construct_scalar(node)
        if suffix == "ref":
            return ("!ref", value)
        return value

    Loader.add_multi_constructor("!", any_tag)
    try:
        with open(path, "r", encoding="utf-8") as f:
            cfg = yaml.load(f, Loader=Loader)
    except OSError as e:
        raise ConvertError("%s: %s" % (path, e.strerror))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConvertError("%s: not valid YAML (%s)" % (path, str(e).splitlines()[0]))
    if not isinstance(cfg, dict):
        raise ConvertError("%s: the top level is not a mapping" % path)

    def resolve(v):
        if isinstance(v, tuple) and len(v) == 2 and v[0] == "!ref":
            m = re.fullmatch(r"\s*<([^>]+)>\s*", v[1])
            if not m or m.group(1) not in cfg:
                raise ConvertError("%s: cannot resolve !ref %s" % (path, v[1]))
            return resolve(cfg[m.group(1)])
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        if isinstance(v, list):
            return [resolve(x) for x in v]
        return v

    return resolve(cfg)


def _get(cfg, path, where, kind=None, default=None):
    node = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not None:
                return default
            raise ConvertError("%s: missing %s" % (where, path))
        node = node[part]
    if kind is int:
        if isinstance(node, bool) or not isinstance(node, int):
            raise ConvertError("%s: %s = %r is not an integer" % (where, path, node))
    elif kind is float:
        try:
            node = float(node)
        except (TypeError, ValueError):
            raise ConvertError("%s: %s = %r is not a number" % (where, path, node))
    elif kind is list:
        if not isinstance(node, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                for x in node):
            raise ConvertError("%s: %s = %r is not a list of integers" % (where, path, node))
    return node


def _expect(cfg, path, where, want, default=None):
    v = _get(cfg, path, where, default=default)
    if isinstance(want, str) and isinstance(v, str):
        ok = v.lower() == want.lower()
    else:
        ok = v == want
    if not ok:
        raise ConvertError("%s: %s = %r is not supported (parley implements %r)"
                           % (where, path, v, want))


def flow_hparams(cfg, where):
    f = "flow."
    enc = f + "encoder."
    est = f + "decoder.estimator."
    cfm = f + "decoder.cfm_params."
    cfm_node = _get(cfg, "flow.decoder.cfm_params", where)
    if isinstance(cfm_node, dict) and "content" in cfm_node:  # omegaconf.DictConfig(content=...)
        cfm = f + "decoder.cfm_params.content."
    for path, want, default in [(enc + "input_layer", "linear", None),
                                (enc + "pos_enc_layer_type", "rel_pos_espnet", None),
                                (enc + "selfattention_layer_type", "block_rel_selfattn", None),
                                (enc + "normalize_before", True, True),
                                (enc + "macaron_style", False, False),
                                (enc + "use_cnn_module", False, False),
                                (cfm + "solver", "euler", None),
                                (cfm + "t_scheduler", "cosine", None),
                                (est + "act_fn", "gelu", None),
                                (f + "decoder.n_spks", 1, 1)]:
        _expect(cfg, path, where, want, default)
    hp = {
        "flow.input_size": _get(cfg, f + "input_size", where, int),
        "flow.output_size": _get(cfg, f + "output_size", where, int),
        "flow.spk_embed_dim": _get(cfg, f + "spk_embed_dim", where, int),
        "flow.vocab_size": _get(cfg, f + "vocab_size", where, int),
        "flow.input_frame_rate": _get(cfg, f + "input_frame_rate", where, float),
        "flow.encoder.output_size": _get(cfg, enc + "output_size", where, int),
        "flow.encoder.attention_heads": _get(cfg, enc + "attention_heads", where, int),
        "flow.encoder.linear_units": _get(cfg, enc + "linear_units", where, int),
        "flow.encoder.num_blocks": _get(cfg, enc + "num_blocks", where, int),
        "flow.encoder.block_size": _get(cfg, enc + "block_size", where, int),
        "flow.length_regulator.n_layers":
            len(_get(cfg, f + "length_regulator.sampling_ratios", where, list)),
        "flow.cfm.inference_cfg_rate": _get(cfg, cfm + "inference_cfg_rate", where, float),
        "flow.cfm.n_timesteps": 10,  # hard-coded in flow.inference (spec §7.3.8)
        "flow.estimator.in_channels": _get(cfg, est + "in_channels", where, int),
        "flow.estimator.out_channels": _get(cfg, est + "out_channels", where, int),
        "flow.estimator.channels": _get(cfg, est + "channels", where, list),
        "flow.estimator.n_blocks": _get(cfg, est + "n_blocks", where, int),
        "flow.estimator.num_mid_blocks": _get(cfg, est + "num_mid_blocks", where, int),
        "flow.estimator.num_heads": _get(cfg, est + "num_heads", where, int),
        "flow.estimator.attention_head_dim": _get(cfg, est + "attention_head_dim", where, int),
        "flow.sample_rate": _get(cfg, "sample_rate", where, int, default=22050),
        "flow.hop_length": 256,  # the 22050/256 of the mel length rule (spec §7.3.5)
    }
    ch = hp["flow.estimator.channels"]
    if len(ch) != 2 or ch[0] != ch[1]:
        raise ConvertError("%s: flow.decoder.estimator.channels %r: parley implements two equal "
                           "levels, as released" % (where, ch))
    if hp["flow.estimator.in_channels"] != 4 * hp["flow.output_size"]:
        raise ConvertError("%s: estimator in_channels %d != 4 x output_size %d"
                           % (where, hp["flow.estimator.in_channels"], hp["flow.output_size"]))
    return hp


def hift_hparams(cfg, where):
    h = "hift."
    dil = _get(cfg, h + "resblock_dilation_sizes", where)
    sdil = _get(cfg, h + "source_resblock_dilation_sizes", where)
    for name, v in (("resblock_dilation_sizes", dil), ("source_resblock_dilation_sizes", sdil)):
        if not isinstance(v, list) or not all(isinstance(x, list) and len(x) == 3 for x in v):
            raise ConvertError("%s: hift.%s = %r is not a list of 3-element lists"
                               % (where, name, v))
    return {
        "hift.in_channels": _get(cfg, h + "in_channels", where, int),
        "hift.base_channels": _get(cfg, h + "base_channels", where, int),
        "hift.nb_harmonics": _get(cfg, h + "nb_harmonics", where, int),
        "hift.sampling_rate": _get(cfg, h + "sampling_rate", where, int),
        "hift.nsf_alpha": _get(cfg, h + "nsf_alpha", where, float),
        "hift.nsf_sigma": _get(cfg, h + "nsf_sigma", where, float),
        "hift.nsf_voiced_threshold": _get(cfg, h + "nsf_voiced_threshold", where, float),
        "hift.upsample_rates": _get(cfg, h + "upsample_rates", where, list),
        "hift.upsample_kernel_sizes": _get(cfg, h + "upsample_kernel_sizes", where, list),
        "hift.istft_n_fft": _get(cfg, h + "istft_params.n_fft", where, int),
        "hift.istft_hop": _get(cfg, h + "istft_params.hop_len", where, int),
        "hift.resblock_kernel_sizes": _get(cfg, h + "resblock_kernel_sizes", where, list),
        "hift.resblock_dilation_sizes": [int(x) for d in dil for x in d],
        "hift.source_resblock_kernel_sizes":
            _get(cfg, h + "source_resblock_kernel_sizes", where, list),
        "hift.source_resblock_dilation_sizes": [int(x) for d in sdil for x in d],
        "hift.lrelu_slope": _get(cfg, h + "lrelu_slope", where, float),
        "hift.audio_limit": _get(cfg, h + "audio_limit", where, float),
        "hift.f0_cond_channels": _get(cfg, h + "f0_predictor.cond_channels", where, int),
    }


# ---- checkpoints -----------------------------------------------------------------------------

def load_state_dict(path):
    try:
        import torch
    except ImportError:
        raise ConvertError("%s: reading it needs PyTorch (apt-get install python3-torch)" % path)
    try:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except TypeError:  # torch without weights_only
            sd = torch.load(path, map_location="cpu")
    except Exception as e:  # torch raises many types for a bad file
        raise ConvertError("%s: not a PyTorch checkpoint torch.load can read (%s)"
                           % (path, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(hasattr(v, "shape") for v in sd.values()):
        raise ConvertError("%s: not a state dict of tensors" % path)
    return sd


def fold_weight_norm(sd, path):
    """{name: float32 numpy} with every (weight_g, weight_v) pair replaced by weight."""
    import torch
    out = {}
    for name, t in sd.items():
        if name.endswith(".weight_g"):
            base = name[:-len("_g")]
            v = sd.get(base + "_v")
            if v is None:
                raise ConvertError("%s: %s has no matching %s_v" % (path, name, base))
            if t.dim() != v.dim() or t.shape[0] != v.shape[0] or t.numel() != t.shape[0]:
                raise ConvertError("%s: %s %s does not fit %s_v %s"
                                   % (path, name, list(t.shape), base, list(v.shape)))
            w = torch._weight_norm(v.float(), t.float(), 0)
            out[base] = w.detach().numpy().astype(np.float32)
        elif name.endswith(".weight_v"):
            if name[:-len("_v")] + "_g" not in sd:
                raise ConvertError("%s: %s has no matching weight_g" % (path, name))
        else:
            if not t.is_floating_point():
                raise ConvertError("%s: %s has non-float dtype %s" % (path, name, t.dtype))
            out[name] = t.detach().float().numpy().astype(np.float32)
    return out


def flow_shapes(hp):
    """Expected {name: shape} of flow.pt (spec §7.2) for these hyperparameters."""
    D = hp["flow.encoder.output_size"]
    E = hp["flow.input_size"]
    M = hp["flow.output_size"]
    H = hp["flow.encoder.attention_heads"]
    U = hp["flow.encoder.linear_units"]
    C = hp["flow.estimator.channels"][0]
    Ci = hp["flow.estimator.in_channels"]
    inner = hp["flow.estimator.num_heads"] * hp["flow.estimator.attention_head_dim"]
    Te = 4 * C
    s = {"input_embedding.weight": (hp["flow.vocab_size"], E),
         "spk_embed_affine_layer.weight": (M, hp["flow.spk_embed_dim"]),
         "spk_embed_affine_layer.bias": (M,),
         "encoder.embed.out.0.weight": (D, E), "encoder.embed.out.0.bias": (D,),
         "encoder.embed.out.1.weight": (D,), "encoder.embed.out.1.bias": (D,),
         "encoder.after_norm.weight": (D,), "encoder.after_norm.bias": (D,),
         "encoder_proj.weight": (M, D), "encoder_proj.bias": (M,)}
    for e in range(hp["flow.encoder.num_blocks"]):
        p = "encoder.encoders.%d." % e
        for n in "qkv":
            s[p + "self_attn.linear_%s.weight" % n] = (D, D)
            s[p + "self_attn.linear_%s.bias" % n] = (D,)
        s[p + "self_attn.linear_out.weight"] = (D, D)
        s[p + "self_attn.linear_out.bias"] = (D,)
        s[p + "self_attn.linear_pos.weight"] = (D, D)
        s[p + "self_attn.pos_bias_u"] = (H, D // H)
        s[p + "self_attn.pos_bias_v"] = (H, D // H)
        s[p + "feed_forward.w_1.weight"] = (U, D)
        s[p + "feed_forward.w_1.bias"] = (U,)
        s[p + "feed_forward.w_2.weight"] = (D, U)
        s[p + "feed_forward.w_2.bias"] = (D,)
        for n in ("norm_mha", "norm_ff"):
            s[p + n + ".weight"] = (D,)
            s[p + n + ".bias"] = (D,)
    for i in range(hp["flow.length_regulator.n_layers"]):
        s["length_regulator.model.%d.weight" % (3 * i)] = (M, M, 3)
        s["length_regulator.model.%d.bias" % (3 * i)] = (M,)
        s["length_regulator.model.%d.weight" % (3 * i + 1)] = (M,)
        s["length_regulator.model.%d.bias" % (3 * i + 1)] = (M,)
    n = 3 * hp["flow.length_regulator.n_layers"]
    s["length_regulator.model.%d.weight" % n] = (M, M, 1)
    s["length_regulator.model.%d.bias" % n] = (M,)
    p = "decoder.estimator."
    s[p + "time_mlp.linear_1.weight"] = (Te, Ci)
    s[p + "time_mlp.linear_1.bias"] = (Te,)
    s[p + "time_mlp.linear_2.weight"] = (Te, Te)
    s[p + "time_mlp.linear_2.bias"] = (Te,)

    def resnet(q, d, o):
        s[q + "mlp.1.weight"] = (o, Te)
        s[q + "mlp.1.bias"] = (o,)
        s[q + "block1.block.0.weight"] = (o, d, 3)
        s[q + "block2.block.0.weight"] = (o, o, 3)
        for b in ("block1", "block2"):
            s[q + b + ".block.0.bias"] = (o,)
            s[q + b + ".block.1.weight"] = (o,)
            s[q + b + ".block.1.bias"] = (o,)
        s[q + "res_conv.weight"] = (o, d, 1)
        s[q + "res_conv.bias"] = (o,)

    def tblocks(q):
        for j in range(hp["flow.estimator.n_blocks"]):
            t = q + "%d." % j
            for n in ("norm1", "norm3"):
                s[t + n + ".weight"] = (C,)
                s[t + n + ".bias"] = (C,)
            for n in "qkv":
                s[t + "attn1.to_%s.weight" % n] = (inner, C)
            s[t + "attn1.to_out.0.weight"] = (C, inner)
            s[t + "attn1.to_out.0.bias"] = (C,)
            s[t + "ff.net.0.proj.weight"] = (4 * C, C)
            s[t + "ff.net.0.proj.bias"] = (4 * C,)
            s[t + "ff.net.2.weight"] = (C, 4 * C)
            s[t + "ff.net.2.bias"] = (C,)

    resnet(p + "down_blocks.0.0.", Ci, C)
    tblocks(p + "down_blocks.0.1.")
    s[p + "down_blocks.0.2.conv.weight"] = (C, C, 3)
    s[p + "down_blocks.0.2.conv.bias"] = (C,)
    resnet(p + "down_blocks.1.0.", C, C)
    tblocks(p + "down_blocks.1.1.")
    s[p + "down_blocks.1.2.weight"] = (C, C, 3)
    s[p + "down_blocks.1.2.bias"] = (C,)
    for i in range(hp["flow.estimator.num_mid_blocks"]):
        resnet(p + "mid_blocks.%d.0." % i, C, C)
        tblocks(p + "mid_blocks.%d.1." % i)
    resnet(p + "up_blocks.0.0.", 2 * C, C)
    tblocks(p + "up_blocks.0.1.")
    s[p + "up_blocks.0.2.conv.weight"] = (C, C, 4)
    s[p + "up_blocks.0.2.conv.bias"] = (C,)
    resnet(p + "up_blocks.1.0.", 2 * C, C)
    tblocks(p + "up_blocks.1.1.")
    s[p + "up_blocks.1.2.weight"] = (C, C, 3)
    s[p + "up_blocks.1.2.bias"] = (C,)
    s[p + "final_block.block.0.weight"] = (C, C, 3)
    s[p + "final_block.block.0.bias"] = (C,)
    s[p + "final_block.block.1.weight"] = (C,)
    s[p + "final_block.block.1.bias"] = (C,)
    s[p + "final_proj.weight"] = (hp["flow.estimator.out_channels"], C, 1)
    s[p + "final_proj.bias"] = (hp["flow.estimator.out_channels"],)
    return s


def hift_shapes(hp):
    base = hp["hift.base_channels"]
    cin = hp["hift.in_channels"]
    c = hp["hift.f0_cond_channels"]
    nspec = hp["hift.istft_n_fft"] + 2
    rates = hp["hift.upsample_rates"]
    ks = hp["hift.upsample_kernel_sizes"]
    rbk = hp["hift.resblock_kernel_sizes"]
    srk = hp["hift.source_resblock_kernel_sizes"]
    s = {}
    for i in range(5):
        s["f0_predictor.condnet.%d.weight" % (2 * i)] = (c, cin if i == 0 else c, 3)
        s["f0_predictor.condnet.%d.bias" % (2 * i)] = (c,)
    s["f0_predictor.classifier.weight"] = (1, c)
    s["f0_predictor.classifier.bias"] = (1,)
    s["m_source.l_linear.weight"] = (1, hp["hift.nb_harmonics"] + 1)
    s["m_source.l_linear.bias"] = (1,)
    s["conv_pre.weight"] = (base, cin, 7)
    s["conv_pre.bias"] = (base,)

    def resblock(q, ch, k):
        for j in range(3):
            for n in ("convs1", "convs2"):
                s["%s.%s.%d.weight" % (q, n, j)] = (ch, ch, k)
                s["%s.%s.%d.bias" % (q, n, j)] = (ch,)
            for n in ("activations1", "activations2"):
                s["%s.%s.%d.alpha" % (q, n, j)] = (ch,)

    for i in range(len(rates)):
        ci, co = base >> i, base >> (i + 1)
        u = int(np.prod(rates[i + 1:])) if i + 1 < len(rates) else 1
        s["ups.%d.weight" % i] = (ci, co, ks[i])
        s["ups.%d.bias" % i] = (co,)
        s["source_downs.%d.weight" % i] = (co, nspec, 1 if u == 1 else 2 * u)
        s["source_downs.%d.bias" % i] = (co,)
        resblock("source_resblocks.%d" % i, co, srk[i])
        for j, k in enumerate(rbk):
            resblock("resblocks.%d" % (i * len(rbk) + j), co, k)
    s["conv_post.weight"] = (nspec, base >> len(rates), 7)
    s["conv_post.bias"] = (nspec,)
    return s


def check_tensors(tensors, shapes, path):
    missing = [n for n in shapes if n not in tensors]
    extra = [n for n in tensors if n not in shapes]
    if missing:
        raise ConvertError("%s: missing tensor %s (and %d more)" % (path, missing[0],
                                                                    len(missing) - 1))
    if extra:
        raise ConvertError("%s: unexpected tensor %s (and %d more)" % (path, extra[0],
                                                                       len(extra) - 1))
    for n, shape in shapes.items():
        if tuple(tensors[n].shape) != tuple(shape):
            raise ConvertError("%s: tensor %s has shape %s, config.yaml implies %s"
                               % (path, n, list(tensors[n].shape), list(shape)))


def convert(src_dir, out_path, args):
    if getattr(args, "type", None) not in (None, "f32"):
        raise ConvertError("the speech decoder is stored f32 (its convolutions are read as f32); "
                           "drop --type %s" % args.type)
    cfg_path = os.path.join(src_dir, "config.yaml")
    cfg = read_config(cfg_path)
    fhp = flow_hparams(cfg, cfg_path)
    hhp = hift_hparams(cfg, cfg_path)
    flow_path = os.path.join(src_dir, "flow.pt")
    hift_path = os.path.join(src_dir, "hift.pt")
    flow = fold_weight_norm(load_state_dict(flow_path), flow_path)
    check_tensors(flow, flow_shapes(fhp), flow_path)
    hift = fold_weight_norm(load_state_dict(hift_path), hift_path)
    check_tensors(hift, hift_shapes(hhp), hift_path)

    w = gguf.Writer()
    w.add("general.architecture", "glm4voice-decoder")
    w.add("general.name", os.path.basename(os.path.normpath(src_dir)))
    for key, v in list(fhp.items()) + list(hhp.items()):
        if isinstance(v, list):
            w.add(key, v, gguf.INT32)
        elif isinstance(v, float):
            w.add(key, v, gguf.FLOAT32)
        else:
            w.add(key, int(v), gguf.INT32)
    for prefix, tensors in (("flow.", flow), ("hift.", hift)):
        for name in sorted(tensors):
            w.add_tensor(prefix + name, tensors[name], gguf.F32)
    w.write(out_path)
