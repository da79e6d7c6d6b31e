"""duda_d2.modeling.interchange.mmseg_daformer: DAFormer mmseg checkpoints -> this project.

The checkpoints are made here. A small reference network reproduces what DAFormer's public code
builds (mmseg's EncoderDecoder with a MiT encoder and ``DAFormerHead``): mmcv-style
``ConvModule`` (``.conv``, ``.bn``, ``.activate``; no conv bias under a norm) and
``DepthwiseSeparableConvModule`` (``.depthwise_conv``, ``.pointwise_conv``), the ASPP wrapper
(``aspp_modules``, ``bottleneck``, optional ``image_pool``), the linear embeddings
``embed_layers.{i}.proj`` and the classifier ``conv_seg``, with the reference forward (embed
each level, upsample to the finest, concatenate fine first, fuse, dropout, classify). The
encoder is this project's MiT with its keys renamed to the official layout
(``mlp.dwconv.dwconv.*``), whose own mapping is tested in test_convert_pretrained.py. Weights
and BatchNorm statistics are random; the converted network must give the same logits.
"""
import os
import sys
import re
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from helpers import REPO

from duda_d2 import load_config
from duda_d2.modeling.backbone.mit import MIT_SPECS, MixVisionTransformer
from duda_d2.modeling.interchange import mmseg_daformer as mm
from duda_d2.modeling.meta_arch.distillation import build_extra_teachers
from duda_d2.modeling.network import build_segmentation_network, load_network_weights
from duda_d2.utils.user_errors import UserError

sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_model  # noqa: E402

# Non-default widths so that hard-coded 256 / 19 in the converter cannot pass.
EMBED, CLASSES = 48, 5
NETWORK_YAML = os.path.join(REPO, "configs", "networks", "mit_b5_daformer.yaml")


# ---------------------------------------------------------------- reference (mmcv / DAFormer)


class ConvModule(nn.Module):
    """mmcv's ConvModule with norm_cfg BN / None and act_cfg ReLU / None (conv, norm, act)."""

    def __init__(self, cin, cout, kernel_size, padding=0, dilation=1, groups=1, norm=True,
                 act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding, dilation=dilation,
                              groups=groups, bias=not norm)  # bias="auto"
        if norm:
            self.bn = nn.BatchNorm2d(cout)
        self.activate = nn.ReLU(inplace=True) if act else None

    def forward(self, x):
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.activate(x) if self.activate is not None else x


class DepthwiseSeparableConvModule(nn.Module):
    """mmcv: depth-wise ConvModule then point-wise 1x1 ConvModule, both with norm and act."""

    def __init__(self, cin, cout, kernel_size, padding, dilation):
        super().__init__()
        self.depthwise_conv = ConvModule(cin, cin, kernel_size, padding, dilation, groups=cin)
        self.pointwise_conv = ConvModule(cin, cout, 1)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


class ASPPModule(nn.ModuleList):
    """mmseg: one ConvModule per dilation, 1x1 for dilation 1; returns the list of outputs."""

    def __init__(self, dilations, cin, channels):
        super().__init__()
        self.dilations, self.cin, self.channels = dilations, cin, channels
        for d in dilations:
            self.append(ConvModule(cin, channels, 1 if d == 1 else 3, 0 if d == 1 else d, d))

    def forward(self, x):
        return [m(x) for m in self]


class DepthwiseSeparableASPPModule(ASPPModule):
    def __init__(self, dilations, cin, channels):
        super().__init__(dilations, cin, channels)
        for i, d in enumerate(dilations):
            if d > 1:
                self[i] = DepthwiseSeparableConvModule(cin, channels, 3, d, d)


class ASPPWrapper(nn.Module):
    """DAFormer's fusion ASPP: [image pool], branches, 3x3 bottleneck."""

    def __init__(self, cin, channels, sep, dilations, pool):
        super().__init__()
        self.image_pool = (nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(cin, channels, 1))
                           if pool else None)
        aspp = DepthwiseSeparableASPPModule if sep else ASPPModule
        self.aspp_modules = aspp(dilations, cin, channels)
        self.bottleneck = ConvModule((len(dilations) + int(pool)) * channels, channels, 3, 1)

    def forward(self, x):
        outs = []
        if self.image_pool is not None:
            outs.append(F.interpolate(self.image_pool(x), size=x.shape[2:], mode="bilinear",
                                      align_corners=False))
        outs.extend(self.aspp_modules(x))
        return self.bottleneck(torch.cat(outs, dim=1))


class MLP(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.proj = nn.Linear(cin, cout)

    def forward(self, x):
        return self.proj(x.flatten(2).transpose(1, 2).contiguous())


class RefDAFormerHead(nn.Module):
    """DAFormerHead as DAFormer's decode_heads/daformer_head.py + decode_head.py build it."""

    def __init__(self, in_channels, embed_dim, num_classes, fusion, dilations=(1, 6, 12, 18),
                 pool=False):
        super().__init__()
        self.in_index = list(range(len(in_channels)))
        self.embed_layers = nn.ModuleDict(
            {str(i): MLP(c, embed_dim) for i, c in zip(self.in_index, in_channels)})
        total = embed_dim * len(in_channels)
        if fusion == "conv1x1":
            self.fuse_layer = ConvModule(total, embed_dim, 1)
        else:
            self.fuse_layer = ASPPWrapper(total, embed_dim, fusion == "aspp_dw", dilations, pool)
        self.conv_seg = nn.Conv2d(embed_dim, num_classes, 1)
        self.dropout = nn.Dropout2d(0.1)

    def forward(self, x):
        n = x[-1].shape[0]
        os_size = x[0].shape[2:]
        c = {}
        for i in self.in_index:
            c[i] = self.embed_layers[str(i)](x[i])
            if c[i].dim() == 3:
                c[i] = c[i].permute(0, 2, 1).contiguous().reshape(n, -1, *x[i].shape[2:])
            if c[i].shape[2:] != os_size:
                c[i] = F.interpolate(c[i], size=os_size, mode="bilinear", align_corners=False)
        x = self.fuse_layer(torch.cat(list(c.values()), dim=1))
        return self.conv_seg(self.dropout(x))


class RefEncoderDecoder(nn.Module):
    """mmseg's EncoderDecoder (logits at stride 4, before the final resize)."""

    def __init__(self, variant, fusion, embed_dim=EMBED, num_classes=CLASSES, **head):
        super().__init__()
        self.backbone = MixVisionTransformer(MIT_SPECS[variant], drop_path_rate=0.0)
        self.decode_head = RefDAFormerHead(MIT_SPECS[variant].embed_dims, embed_dim,
                                           num_classes, fusion, **head)

    def forward(self, img):
        feats = self.backbone(img)
        return self.decode_head([feats[k] for k in ("res2", "res3", "res4", "res5")])

    def official_state_dict(self):
        """The keys DAFormer's checkpoints have (mmseg MiT: ``mlp.dwconv.dwconv``)."""
        return OrderedDict((k.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv."), v)
                           for k, v in self.state_dict().items())

    def load_official(self, sd):
        self.load_state_dict({k.replace(".mlp.dwconv.dwconv.", ".mlp.dwconv."): v
                              for k, v in sd.items()})


def randomised(sd, seed):
    """Random values for every tensor (scaled to keep activations O(1)); BN statistics too."""
    gen = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(int(torch.randint(1, 1000, (), generator=gen)))
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=gen) + 0.5
        elif k.endswith("running_mean") or k.endswith("bias"):
            out[k] = 0.1 * torch.randn(v.shape, generator=gen)
        elif v.dim() == 1:  # norm scales
            out[k] = 1 + 0.2 * torch.randn(v.shape, generator=gen)
        else:
            fan_in = v[0].numel()
            out[k] = torch.randn(v.shape, generator=gen) / fan_in ** 0.5
    return out


def dacs(model_sd, ema_sd, imnet_sd, extra=None):
    """A DACS checkpoint's state dict: student, EMA teacher, ImageNet model (+ extra keys)."""
    sd = OrderedDict()
    for prefix, part in (("model.", model_sd), ("ema_model.", ema_sd),
                         ("imnet_model.", imnet_sd)):
        sd.update((prefix + k, v) for k, v in part.items())
    sd.update(extra or {})
    return sd


_CACHE = {}


def release(fusion):
    """(reference model, {"model"|"ema_model"|"imnet_model": official state dict}) for MiT-B0
    and ``fusion``; the three copies differ."""
    if fusion not in _CACHE:
        ref = RefEncoderDecoder("b0", fusion).eval()
        base = ref.official_state_dict()
        _CACHE[fusion] = ref, {name: randomised(base, seed) for seed, name in
                               enumerate(("model", "ema_model", "imnet_model"))}
    return _CACHE[fusion]


def ref_logits(fusion, which, x):
    ref, sds = release(fusion)
    ref.load_official(sds[which])
    with torch.no_grad():
        return ref(x)


def save_checkpoint(path, state_dict):
    """An mmcv checkpoint file: meta, state_dict (and no optimizer, which is irrelevant)."""
    torch.save({"meta": {"CLASSES": tuple(f"c{i}" for i in range(CLASSES)), "iter": 40000},
                "state_dict": state_dict}, path)
    return str(path)


def cli(*argv):
    """tools/convert_model.py from-mmseg as ``main`` runs it, a UserError raised instead of
    printed (main's printing and exit code are tested in test_interchange_huggingface)."""
    args = convert_model.build_parser().parse_args(["from-mmseg", *[str(a) for a in argv]])
    convert_model.check_output_dir(args.output_dir, args.overwrite)
    return convert_model.SUBCOMMANDS["from-mmseg"].run(args)


def converted_logits(network_state, info, x):
    cfg = load_config(NETWORK_YAML, mm.network_config_opts(info))
    net = build_segmentation_network(cfg).eval()
    net.load_state_dict(network_state)  # strict: every key, every shape
    with torch.no_grad():
        return net(x)["sem_seg"]


X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- tests


def test_cli_converts_dacs_release_to_identical_network(tmp_path):
    """Sep-ASPP DAFormer in the DACS layout, through the CLI: model.yaml + model.pth build and
    load a network whose logits are the reference student's."""
    _, sds = release("aspp_dw")
    ckpt = save_checkpoint(tmp_path / "latest.pth", dacs(sds["model"], sds["ema_model"],
                                                         sds["imnet_model"]))
    out = tmp_path / "out"
    assert cli(ckpt, out) == 0
    cfg = load_config(str(out / "model.yaml"))
    assert cfg.MODEL.META_ARCHITECTURE == "UDASegmentor"
    assert cfg.MODEL.WEIGHTS == str(out / "model.pth") and os.path.isabs(cfg.MODEL.WEIGHTS)
    assert (cfg.MODEL.MIT.VARIANT, cfg.MODEL.SEM_SEG_HEAD.FUSION) == ("b0", "aspp_dw")
    assert (cfg.MODEL.SEM_SEG_HEAD.EMBED_DIM, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) == (EMBED,
                                                                                     CLASSES)
    assert list(cfg.MODEL.SEM_SEG_HEAD.ASPP_DILATIONS) == [1, 6, 12, 18]
    net = build_segmentation_network(cfg).eval()
    load_network_weights(net, cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS")
    with torch.no_grad():
        got = net(X)["sem_seg"]
    want = ref_logits("aspp_dw", "model", X)
    assert got.shape == want.shape == (1, CLASSES, 16, 16)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    saved = torch.load(out / "model.pth", weights_only=False)
    assert saved["__author__"] == "duda_d2.convert_model"
    assert saved["source"] == os.path.abspath(ckpt)
    assert all(k.startswith(("network.backbone.", "network.head.")) for k in saved["model"])
    assert saved["network_opts"] == mm.network_config_opts(saved["info"])
    assert saved["class_names"] == [f"c{i}" for i in range(CLASSES)]  # the release's meta
    # Refuses to overwrite without --overwrite; replaces with it.
    with pytest.raises(UserError, match="--overwrite"):
        cli(ckpt, out)
    assert cli(ckpt, out, "--overwrite", "--which", "ema_model") == 0


@pytest.mark.parametrize("fusion", ["aspp", "conv1x1"])
def test_other_fusions_match_reference(fusion):
    """Plain ASPP and the 1x1 fusion (DAFormer's ablations) convert to identical networks."""
    _, sds = release(fusion)
    state, info, report = mm.convert_mmseg_daformer(
        dacs(sds["model"], sds["ema_model"], sds["imnet_model"]))
    assert report.ok, report.problems()
    assert info["fusion"] == fusion and info["variant"] == "b0"
    assert (info["embed_dim"], info["num_classes"]) == (EMBED, CLASSES)
    torch.testing.assert_close(converted_logits(state, info, X),
                               ref_logits(fusion, "model", X), atol=1e-4, rtol=1e-4)


def test_which_selects_the_network():
    """auto = model (the student DAFormer evaluates); ema_model the teacher; others dropped."""
    _, sds = release("aspp_dw")
    sd = dacs(sds["model"], sds["ema_model"], sds["imnet_model"],
              extra={"mic.teacher.ema_model.conv.weight": torch.zeros(1)})
    auto, info_auto, rep_auto = mm.convert_mmseg_daformer(sd)
    model, _, _ = mm.convert_mmseg_daformer(sd, which="model")
    ema, info_ema, rep_ema = mm.convert_mmseg_daformer(sd, which="ema_model")
    assert rep_auto.ok and rep_ema.ok
    assert info_auto["which"] == "model" and info_ema["which"] == "ema_model"
    key = "head.linear_pred.weight"
    assert torch.equal(auto[key], model[key])
    assert torch.equal(auto[key], sds["model"]["decode_head.conv_seg.weight"])
    assert torch.equal(ema[key], sds["ema_model"]["decode_head.conv_seg.weight"])
    dropped = dict(rep_ema.dropped)
    assert "model.decode_head.conv_seg.weight" in dropped
    assert "imnet_model" in dropped["imnet_model.backbone.norm4.weight"]
    assert "MIC" in dropped["mic.teacher.ema_model.conv.weight"]
    assert len(rep_ema.converted) + len(rep_ema.dropped) == rep_ema.num_source
    want = ref_logits("aspp_dw", "ema_model", X)
    torch.testing.assert_close(converted_logits(ema, info_ema, X), want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(want, ref_logits("aspp_dw", "model", X), atol=1e-2)


def test_plain_encoder_decoder_with_auxiliary_head():
    """A plain EncoderDecoder state dict: converted as is, auxiliary head dropped on purpose."""
    _, sds = release("aspp")
    sd = OrderedDict(sds["imnet_model"])
    sd["auxiliary_head.conv_seg.weight"] = torch.zeros(CLASSES, 8, 1, 1)
    state, info, report = mm.convert_mmseg_daformer({"state_dict": sd})
    assert report.ok and report.source_layout == "EncoderDecoder"
    assert [k for k, _ in report.dropped] == ["auxiliary_head.conv_seg.weight"]
    assert "auxiliary head" in report.summary()
    torch.testing.assert_close(converted_logits(state, info, X),
                               ref_logits("aspp", "imnet_model", X), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="single network"):
        mm.convert_mmseg_daformer(sd, which="ema_model")


def test_mit_b5_sepaspp_key_mapping_is_complete():
    """DAFormer's own configuration (MiT-B5, sep. ASPP, 256, 19 classes) on the meta device:
    every source tensor converts, and the result is exactly the key/shape set of the network
    the emitted options build."""
    with torch.device("meta"):
        ref = RefEncoderDecoder("b5", "aspp_dw", embed_dim=256, num_classes=19)
        sd = ref.official_state_dict()
        state, info, report = mm.convert_mmseg_daformer(dacs(sd, sd, {}))
        cfg = load_config(NETWORK_YAML, mm.network_config_opts(info))
        ours = build_segmentation_network(cfg).state_dict()
    assert report.ok, report.problems()[:5]
    assert info == {"variant": "b5", "head": "DAFormerHead", "embed_dim": 256,
                    "fusion": "aspp_dw", "aspp_dilations": [1, 6, 12, 18], "num_classes": 19,
                    "which": "model", "source_layout": "UDA wrapper (DACS)"}
    assert len(report.converted) == len(sd) == len(ours)
    assert {k: tuple(v.shape) for k, v in state.items()} == \
        {k: tuple(v.shape) for k, v in ours.items()}
    # Spot-check the non-trivial renames.
    head = {"head.fuse.branches.1.0.0.weight": "decode_head.fuse_layer.aspp_modules.1."
                                               "depthwise_conv.conv.weight",
            "head.fuse.branches.3.1.1.running_var": "decode_head.fuse_layer.aspp_modules.3."
                                                    "pointwise_conv.bn.running_var",
            "head.fuse.branches.0.0.weight": "decode_head.fuse_layer.aspp_modules.0.conv.weight",
            "head.fuse.bottleneck.1.num_batches_tracked": "decode_head.fuse_layer.bottleneck.bn."
                                                          "num_batches_tracked",
            "head.embed.linear_c.3.weight": "decode_head.embed_layers.3.proj.weight",
            "head.linear_pred.bias": "decode_head.conv_seg.bias",
            "backbone.block3.39.mlp.dwconv.weight": "backbone.block3.39.mlp.dwconv.dwconv.weight"}
    for ours_key, theirs in head.items():
        assert state[ours_key] is sd[theirs], ours_key


def test_hrda_and_segformer_checkpoints_refused(tmp_path):
    _, sds = release("aspp_dw")
    hrda = OrderedDict()
    for k, v in sds["model"].items():
        if k.startswith("decode_head."):
            hrda["model." + k.replace("decode_head.", "decode_head.head.", 1)] = v
            hrda["model." + k.replace("decode_head.", "decode_head.scale_attention.", 1)] = v
        else:
            hrda["model." + k] = v
    with pytest.raises(ValueError, match=re.escape(mm.HRDA_MESSAGE)):
        mm.convert_mmseg_daformer(hrda)
    ckpt = save_checkpoint(tmp_path / "hrda.pth", hrda)
    with pytest.raises(UserError, match="not supported until duda_d2 has HRDA"):
        cli(ckpt, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out" / "model.pth")
    segformer = {k: v for k, v in sds["model"].items() if k.startswith("backbone.")}
    segformer["decode_head.linear_fuse.conv.weight"] = torch.zeros(8, 32, 1, 1)
    segformer["decode_head.linear_pred.weight"] = torch.zeros(CLASSES, 8, 1, 1)
    with pytest.raises(ValueError, match="Hugging Face import"):
        mm.convert_mmseg_daformer(segformer)


def test_unsupported_head_structures_refused():
    """Image pooling, wrong number or placement of dilations: refused, never half-converted."""
    pooled = RefEncoderDecoder("b0", "aspp_dw", pool=True).official_state_dict()
    with pytest.raises(ValueError, match="image pooling"):
        mm.convert_mmseg_daformer(pooled)
    _, sds = release("aspp_dw")
    with pytest.raises(ValueError, match="4 branches but 3 dilations"):
        mm.convert_mmseg_daformer(sds["model"], aspp_dilations=(1, 6, 12))
    with pytest.raises(ValueError, match="branch 0 .* 1x1"):
        mm.convert_mmseg_daformer(sds["model"], aspp_dilations=(6, 1, 12, 18))
    # Other dilations with the same layout are accepted and recorded (not in the weights).
    _, info, report = mm.convert_mmseg_daformer(sds["model"], aspp_dilations=(1, 2, 3, 4))
    assert report.ok and info["aspp_dilations"] == [1, 2, 3, 4]


def test_missing_extra_and_misshapen_keys_reported_and_nothing_written(tmp_path):
    _, sds = release("aspp_dw")
    sd = dacs(sds["model"], sds["ema_model"], sds["imnet_model"])
    del sd["model.decode_head.fuse_layer.aspp_modules.2.pointwise_conv.bn.running_mean"]
    del sd["model.backbone.block2.1.attn.kv.bias"]
    sd["model.decode_head.fuse_layer.bottleneck.conv.weight"] = torch.zeros(EMBED, 4 * EMBED,
                                                                            1, 1)
    sd["model.decode_head.extra_layer.weight"] = torch.zeros(3)
    sd["model.backbone.block1.0.mlp.dwconv.dwconv.weight"] = torch.zeros(7, 1, 3, 3)
    sd["stray.key"] = torch.zeros(1)
    state, _, report = mm.convert_mmseg_daformer(sd)
    assert not report.ok
    assert set(report.missing_target) == {
        "head.fuse.branches.2.1.1.running_mean", "backbone.block2.1.attn.kv.bias"}
    assert {k for k, _ in report.unmatched_source} == {
        "model.decode_head.extra_layer.weight", "stray.key"}
    assert {(t, s) for t, s, *_ in report.shape_mismatches} == {
        ("head.fuse.bottleneck.0.weight",
         "'model.decode_head.fuse_layer.bottleneck.conv.weight'"),
        ("backbone.block1.0.mlp.dwconv.weight",
         "'model.backbone.block1.0.mlp.dwconv.dwconv.weight'")}
    assert "head.fuse.bottleneck.0.weight" not in state
    assert len(report.problems()) == 6
    ckpt = save_checkpoint(tmp_path / "broken.pth", sd)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="6 unmatched keys or shape mismatches") as err:
        cli(ckpt, out)
    assert "missing target key 'head.fuse.branches.2.1.1.running_mean'" in str(err.value)
    assert not os.path.exists(out / "model.pth") and not os.path.exists(out / "model.yaml")
    with pytest.raises(UserError, match="does not exist"):
        cli(tmp_path / "absent.pth", out)


def test_converted_file_loads_as_extra_teacher(tmp_path):
    """model.yaml + model.pth as MODEL.DUDA.EXTRA_TEACHER_*: built, loaded by
    load_network_weights (strict), frozen, and computing the reference logits."""
    _, sds = release("conv1x1")
    ckpt = save_checkpoint(tmp_path / "latest.pth", dacs(sds["model"], sds["ema_model"],
                                                         sds["imnet_model"]))
    out = tmp_path / "teacher"
    cli(ckpt, out, "--which", "ema_model")
    cfg = load_config(os.path.join(REPO, "configs", "networks", "mit_b0_segformer.yaml"), [
        "MODEL.DUDA.EXTRA_TEACHER_CONFIGS", f"['{out / 'model.yaml'}']",
        "MODEL.DUDA.EXTRA_TEACHER_WEIGHTS", f"['{out / 'model.pth'}']",
        "MODEL.DUDA.EXTRA_TEACHER_LOSS_WEIGHTS", "[1.0]"])
    (teacher,) = build_extra_teachers(cfg)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.eval()
    with torch.no_grad():
        got = teacher(X)["sem_seg"]
    torch.testing.assert_close(got, ref_logits("conv1x1", "ema_model", X), atol=1e-4,
                               rtol=1e-4)


def test_converted_file_initialises_dudas_large_pair_but_not_the_fd_reference(tmp_path):
    """MODEL.DUDA.LARGE_NETWORK_WEIGHTS: the large student and its EMA teacher start as the
    converted DAFormer model (its logits); FD's ImageNet reference keeps the backbone's own
    initialisation (here random: FD_RANDOM_REFERENCE)."""
    from detectron2.modeling import build_model

    from test_duda import CONFIG, TINY

    _, sds = release("aspp_dw")
    ckpt = save_checkpoint(tmp_path / "latest.pth", dacs(sds["model"], sds["ema_model"],
                                                         sds["imnet_model"]))
    cli(ckpt, tmp_path / "large")
    opts = torch.load(tmp_path / "large" / "model.pth", weights_only=False)["network_opts"]
    cfg = load_config(os.path.join(REPO, CONFIG), [
        *TINY, "MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", CLASSES,
        "MODEL.DUDA.LARGE_NETWORK_OPTS", opts, "MODEL.UDA.FD_LAMBDA", 0.005,
        "MODEL.UDA.FD_RANDOM_REFERENCE", True,
        "MODEL.DUDA.LARGE_NETWORK_WEIGHTS", str(tmp_path / "large" / "model.pth")])
    duda = build_model(cfg).eval()
    want = ref_logits("aspp_dw", "model", X)
    with torch.no_grad():
        for network in (duda.large_pair.student, duda.large_pair.teacher):
            torch.testing.assert_close(network(X)["sem_seg"], want, atol=1e-4, rtol=1e-4)
    reference = duda.large_pair.imagenet_reference.state_dict()
    student = duda.large_pair.student.backbone.state_dict()
    assert not torch.equal(reference["patch_embed1.proj.weight"],
                           student["patch_embed1.proj.weight"])


def test_a_release_whose_meta_config_is_hrda_is_refused(tmp_path):
    """HRDA/MIC(HRDA) releases carry their training config in meta: refused by it, even if
    the tensors looked like a DAFormer's."""
    _, sds = release("conv1x1")
    path = tmp_path / "hrda.pth"
    torch.save({"meta": {"config": "model = dict(type='HRDAEncoderDecoder', decode_head=dict("
                                   "type='HRDAHead', single_scale_head='DAFormerHead'))"},
                "state_dict": dacs(sds["model"], sds["ema_model"], sds["imnet_model"])}, path)
    with pytest.raises(UserError, match="not supported until duda_d2 has HRDA"):
        cli(path, tmp_path / "out")
    assert not (tmp_path / "out" / "model.pth").exists()
