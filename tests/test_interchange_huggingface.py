"""Hugging Face SegFormer interchange (duda_d2.modeling.interchange.huggingface_segformer and
tools/convert_model.py), against transformers' own SegformerForSemanticSegmentation.

Models are random (nothing is downloaded): MiT-B0 sizes, a 64-wide decoder, 19 classes, with
LayerNorm / BatchNorm parameters, biases and BatchNorm running statistics randomised so that a
swapped or dropped tensor changes the logits.
"""
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    SegformerConfig,
    SegformerForSemanticSegmentation,
    SegformerImageProcessor,
    SegformerModel,
)

from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

from duda_d2 import load_config  # noqa: E402
from duda_d2.engine import AtomicCheckpointer  # noqa: E402
from duda_d2.modeling.interchange.huggingface_segformer import (  # noqa: E402
    InterchangeError,
    export_huggingface_segformer,
    import_huggingface_segformer,
    segformer_network_settings,
)
from duda_d2.modeling.network import build_segmentation_network, load_network_weights  # noqa
from helpers import REPO  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "tools"))
import convert_model  # noqa: E402

CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
           "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
           "bus", "train", "motorcycle", "bicycle"]
EMBED = 64
NETWORK_CONFIG = os.path.join(REPO, "configs", "networks", "mit_b0_segformer.yaml")
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
TOLERANCE = 1e-4


def randomise_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Norm scales around 1, biases around 0, BatchNorm statistics and the classifier large
    enough that the logits are O(1): every tensor matters to the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                if name.endswith("weight"):
                    p.copy_(0.5 + torch.rand(p.shape, generator=gen))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=gen))
                m.num_batches_tracked.fill_(1234)
            if isinstance(m, torch.nn.Conv2d) and m.out_channels == len(CLASSES) \
                    and m.kernel_size == (1, 1):
                m.weight.normal_(0, 1.0, generator=gen)
    return model.eval()


def hf_logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


def our_logits(network, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return network.eval()(x)["sem_seg"]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def images(seed: int = 0) -> torch.Tensor:
    """A normalised 1x3x64x96 input (the same for both models)."""
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (1, 3, 64, 96), generator=gen).float()
    return (raw - MEAN) / STD


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of tools/convert_model.py."""
    code = convert_model.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def hf_config(**overrides) -> SegformerConfig:
    values = dict(num_labels=len(CLASSES), decoder_hidden_size=EMBED,
                  id2label=dict(enumerate(CLASSES)),
                  label2id={n: i for i, n in enumerate(CLASSES)})
    values.update(overrides)
    return SegformerConfig(**values)


@pytest.fixture(scope="module")
def reference():
    """A random MiT-B0 SegformerForSemanticSegmentation (eval mode)."""
    torch.manual_seed(0)
    return randomise_(SegformerForSemanticSegmentation(hf_config()), seed=1)


@pytest.fixture(scope="module")
def hf_dirs(reference, tmp_path_factory):
    """{"safetensors": folder, "bin": folder} of the reference model. transformers >= 5
    writes safetensors only; the .bin folder is what transformers 4 wrote with
    ``safe_serialization=False`` (torch.save of the same state dict)."""
    root = tmp_path_factory.mktemp("hf")
    st = root / "safetensors"
    reference.save_pretrained(str(st))
    assert (st / "model.safetensors").is_file()
    binary = root / "bin"
    binary.mkdir()
    shutil.copy(st / "config.json", binary / "config.json")
    torch.save(load_file(str(st / "model.safetensors")), str(binary / "pytorch_model.bin"))
    return {"safetensors": str(st), "bin": str(binary)}


def variant_of_folder(src: str, dst, weights=None, config_edit=None) -> str:
    """A copy of the model folder ``src`` with its tensors replaced by ``weights`` and/or its
    config.json edited by ``config_edit(dict)``."""
    os.makedirs(dst)
    config = json.load(open(os.path.join(src, "config.json")))
    if config_edit:
        config_edit(config)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f)
    state = weights if weights is not None else load_file(os.path.join(src, "model.safetensors"))
    save_file({k: v.contiguous() for k, v in state.items()},
              os.path.join(dst, "model.safetensors"))
    return str(dst)


# ---------------------------------------------------------------------------- from-huggingface
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_from_huggingface_gives_the_same_logits(fmt, reference, hf_dirs, tmp_path, capsys):
    out = tmp_path / "converted"
    code, stdout, err = run_cli(capsys, "from-huggingface", hf_dirs[fmt], out)
    assert code == 0, err
    assert "NVIDIA Source Code License" in stdout and "MiT-b0" in stdout
    cfg = load_config(str(out / "model.yaml"), ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.META_ARCHITECTURE == "UDASegmentor"
    assert cfg.MODEL.WEIGHTS == str((out / "model.pth").resolve())
    assert cfg.MODEL.BACKBONE.WEIGHTS == ""
    assert (cfg.MODEL.MIT.VARIANT, cfg.MODEL.SEM_SEG_HEAD.NAME) == ("b0", "SegFormerHead")
    assert cfg.MODEL.SEM_SEG_HEAD.EMBED_DIM == EMBED
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == len(CLASSES)
    checkpoint = torch.load(str(out / "model.pth"), weights_only=False)
    assert checkpoint["__author__"] == "duda_d2.convert_model"
    assert checkpoint["class_names"] == CLASSES
    assert all(k.startswith("network.") for k in checkpoint["model"])

    x = images()
    expected = hf_logits(reference, x)
    assert expected.std() > 0.1  # a wrong tensor would move the logits far beyond TOLERANCE
    # As an extra DUDA teacher: load_network_weights into the network model.yaml describes.
    network = build_segmentation_network(cfg)
    load_network_weights(network, cfg.MODEL.WEIGHTS, "MODEL.DUDA.EXTRA_TEACHER_WEIGHTS")
    assert max_diff(our_logits(network, x), expected) < TOLERANCE
    # As tools/train_net.py --eval-only / tools/predict.py load it: the whole UDASegmentor.
    model = build_model(cfg)
    AtomicCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    assert max_diff(our_logits(model.inference_network(), x), expected) < TOLERANCE


def test_import_accepts_a_weight_file_and_names_classes(hf_dirs):
    imported = import_huggingface_segformer(os.path.join(hf_dirs["safetensors"],
                                                         "model.safetensors"))
    assert imported.class_names == CLASSES
    assert (imported.variant, imported.num_classes, imported.embed_dim) == ("b0", 19, EMBED)
    # Every source tensor was used: 208 HF tensors, key/value pairs stacked into attn.kv.
    assert imported.report.num_source == 208 and imported.report.ok
    assert len(imported.state) == 208 - 16


def test_import_reads_transformers_5_module_names(reference, hf_dirs, tmp_path):
    """torch.save(model.state_dict()) of transformers >= 5 has its module names
    (segformer.stages.*, decode_head.linear_projections.*): the same network comes out."""
    modern = reference.state_dict()
    if not any(k.startswith("segformer.stages.") for k in modern):
        pytest.skip("this transformers names its modules as it writes them")
    folder = tmp_path / "modern"
    folder.mkdir()
    shutil.copy(os.path.join(hf_dirs["safetensors"], "config.json"), folder)
    torch.save(modern, str(folder / "pytorch_model.bin"))
    got = import_huggingface_segformer(str(folder)).state
    expected = import_huggingface_segformer(hf_dirs["safetensors"]).state
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


# ---------------------------------------------------------------------------- to-huggingface
def our_network(head: str = "SegFormerHead", seed: int = 2):
    cfg = load_config(NETWORK_CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NAME", head,
                                       "MODEL.SEM_SEG_HEAD.EMBED_DIM", EMBED])
    torch.manual_seed(seed)
    return cfg, randomise_(build_segmentation_network(cfg), seed=seed)


def write_student(tmp_path, cfg, network, dataset: str = ""):
    """A tools/export_student.py-style pair: student.pth + student.yaml."""
    weights = tmp_path / "student.pth"
    torch.save({"model": {f"network.{k}": v for k, v in network.state_dict().items()}},
               str(weights))
    out = cfg.clone()
    out.MODEL.WEIGHTS = str(weights)
    if dataset:
        out.DATASETS.TEST = (dataset,)
    config = tmp_path / "student.yaml"
    config.write_text(out.dump())
    return str(config), str(weights)


def test_to_huggingface_round_trip(tmp_path, capsys):
    cfg, network = our_network()
    name = "__test_interchange_classes__"
    if name not in MetadataCatalog.list():
        MetadataCatalog.get(name).set(stuff_classes=CLASSES)
    config, weights = write_student(tmp_path, cfg, network, dataset=name)
    out = tmp_path / "hf"
    code, stdout, err = run_cli(capsys, "to-huggingface", "--config-file", config,
                                "--weights", weights, out)
    assert code == 0, err
    assert "NVIDIA Source Code License" in stdout
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(
        os.listdir(out))

    hf = SegformerForSemanticSegmentation.from_pretrained(str(out)).eval()
    assert hf.config.id2label == dict(enumerate(CLASSES))
    assert hf.config.label2id["car"] == 13
    x = images(3)
    expected = our_logits(network, x)
    assert expected.std() > 0.1
    assert max_diff(hf_logits(hf, x), expected) < TOLERANCE

    # The image processor gives the network's own normalisation, at the input size.
    processor = SegformerImageProcessor.from_pretrained(str(out))
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    ours = (torch.from_numpy(image).permute(2, 0, 1)[None].float() - MEAN) / STD
    assert max_diff(pixels, ours) < 1e-4

    # And back: exactly the tensors we started from.
    imported = import_huggingface_segformer(str(out))
    own = network.state_dict()
    assert list(imported.state) == list(own)
    for key, value in own.items():
        assert torch.equal(imported.state[key], value), key
    assert imported.class_names == CLASSES
    # The exported processor's statistics come back as the config's (x 255).
    assert imported.settings["MODEL.PIXEL_MEAN"] == pytest.approx(MEAN.flatten().tolist())
    assert imported.settings["MODEL.PIXEL_STD"] == pytest.approx(STD.flatten().tolist())


def test_import_takes_the_pixel_statistics_of_preprocessor_config(hf_dirs, tmp_path, capsys):
    """A model trained with mean/std 0.5 keeps them: model.yaml normalises as its processor."""
    folder = tmp_path / "half"
    shutil.copytree(hf_dirs["safetensors"], folder)
    SegformerImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    code, _, err = run_cli(capsys, "from-huggingface", folder, tmp_path / "out")
    assert code == 0, err
    cfg = load_config(str(tmp_path / "out" / "model.yaml"))
    assert list(cfg.MODEL.PIXEL_MEAN) == pytest.approx([127.5] * 3)
    assert list(cfg.MODEL.PIXEL_STD) == pytest.approx([127.5] * 3)
    SegformerImageProcessor(do_reduce_labels=True).save_pretrained(folder)
    code, _, err = run_cli(capsys, "from-huggingface", folder, tmp_path / "out2")
    assert code == 1 and "do_reduce_labels" in err and "Traceback" not in err


def test_a_truncated_safetensors_file_is_a_clear_error(hf_dirs, tmp_path, capsys):
    folder = tmp_path / "cut"
    shutil.copytree(hf_dirs["safetensors"], folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "from-huggingface", folder, tmp_path / "out")
    assert code == 1 and "truncated" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "model.pth").exists()


def test_from_then_to_huggingface_reproduces_the_model(reference, hf_dirs, tmp_path, capsys):
    converted, back = tmp_path / "converted", tmp_path / "back"
    assert run_cli(capsys, "from-huggingface", hf_dirs["safetensors"], converted)[0] == 0
    code, _, err = run_cli(capsys, "to-huggingface", "--config-file",
                           converted / "model.yaml", "--weights", converted / "model.pth", back)
    assert code == 0, err
    hf = SegformerForSemanticSegmentation.from_pretrained(str(back)).eval()
    x = images(4)
    assert max_diff(hf_logits(hf, x), hf_logits(reference, x)) < TOLERANCE
    source = reference.state_dict()
    for key, value in hf.state_dict().items():
        assert torch.equal(value, source[key]), key


# ---------------------------------------------------------------------------- errors
def test_folder_without_config(hf_dirs, tmp_path, capsys):
    folder = tmp_path / "weights_only"
    folder.mkdir()
    shutil.copy(os.path.join(hf_dirs["safetensors"], "model.safetensors"), folder)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "from-huggingface", folder, out)
    assert code == 1
    assert "has no config.json" in err and str(folder) in err
    assert "Traceback" not in err and not out.exists()


def _drop(state):
    state.pop("decode_head.linear_c.2.proj.bias")
    return "decode_head.linear_c.2.proj.bias"


def _extra(state):
    state["decode_head.auxiliary.weight"] = torch.zeros(3)
    return "decode_head.auxiliary.weight"


def _reshape(state):
    key = "segformer.encoder.block.1.0.mlp.dense1.weight"
    state[key] = state[key][:-1]
    return "block2.0.mlp.fc1.weight"


@pytest.mark.parametrize("edit", [_drop, _extra, _reshape], ids=["missing", "extra", "shape"])
def test_checkpoint_that_does_not_fit(edit, hf_dirs, tmp_path, capsys):
    state = load_file(os.path.join(hf_dirs["safetensors"], "model.safetensors"))
    named = edit(state)
    folder = variant_of_folder(hf_dirs["safetensors"], tmp_path / "broken", weights=state)
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "from-huggingface", folder, out)
    assert code == 1
    assert named in err and "problems" in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("field,value", [("reshape_last_stage", False), ("hidden_act", "relu"),
                                         ("hidden_sizes", [32, 64, 160, 320]),
                                         ("sr_ratios", [4, 4, 2, 1])])
def test_config_the_network_cannot_represent(field, value, hf_dirs, tmp_path):
    folder = variant_of_folder(hf_dirs["safetensors"], tmp_path / "odd",
                               config_edit=lambda c: c.update({field: value}))
    with pytest.raises(InterchangeError, match=field):
        import_huggingface_segformer(folder)


@pytest.mark.parametrize("how", ["architecture", "keys"])
def test_encoder_only_checkpoint_points_at_convert_pretrained(how, tmp_path, capsys):
    folder = tmp_path / "mit-b0"
    SegformerModel(hf_config()).save_pretrained(str(folder))
    if how == "keys":  # no architectures field: told by the missing decode head
        config = json.load(open(folder / "config.json"))
        config.pop("architectures", None)
        (folder / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "from-huggingface", folder, tmp_path / "out")
    assert code == 1
    assert "tools/convert_pretrained.py" in err and "encoder-only" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_daformer_head_is_not_exported(tmp_path, capsys):
    cfg, network = our_network(head="DAFormerHead")
    with pytest.raises(InterchangeError, match="tools/export_student.py"):
        segformer_network_settings(network)
    config, weights = write_student(tmp_path, cfg, network)
    out = tmp_path / "hf"
    code, _, err = run_cli(capsys, "to-huggingface", "--config-file", config,
                           "--weights", weights, out)
    assert code == 1
    assert "DAFormerHead" in err and "tools/export_student.py" in err
    assert "Traceback" not in err and not out.exists()


def test_export_of_a_network_missing_a_tensor_writes_nothing(tmp_path):
    _, network = our_network()
    state = network.state_dict()
    state.pop("head.linear_fuse.1.running_var")
    out = tmp_path / "hf"
    with pytest.raises(InterchangeError, match="running_var"):
        export_huggingface_segformer(state, "b0", len(CLASSES), EMBED, CLASSES, str(out))
    assert not out.exists()


def test_output_folder_is_not_overwritten_without_flag(hf_dirs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pth").write_bytes(b"an earlier conversion")
    code, _, err = run_cli(capsys, "from-huggingface", hf_dirs["safetensors"], out)
    assert code == 1 and "--overwrite" in err and "Traceback" not in err
    assert (out / "model.pth").read_bytes() == b"an earlier conversion"
    code, _, err = run_cli(capsys, "from-huggingface", hf_dirs["safetensors"], out,
                           "--overwrite")
    assert code == 0, err
    assert "network.head.linear_pred.weight" in torch.load(str(out / "model.pth"))["model"]
