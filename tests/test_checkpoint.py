import os

import pytest
import torch

from duda_d2.engine.checkpoint import AtomicCheckpointer
from duda_d2.utils.atomic_files import atomic_write_bytes


def test_save_writes_file_and_tag(tmp_path):
    model = torch.nn.Linear(2, 2)
    ckpt = AtomicCheckpointer(model, save_dir=str(tmp_path))
    ckpt.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert torch.load(tmp_path / "model_0000009.pth", weights_only=False)["iteration"] == 9
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp_")] == []


def test_a_crash_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "model_final.pth"
    path.write_bytes(b"old")

    def crash(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(str(path), crash)
    assert path.read_bytes() == b"old"
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp_")] == []


def test_atomic_write_of_bytes_replaces_the_file_with_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "index.json"
    atomic_write_bytes(str(path), b"first")
    atomic_write_bytes(str(path), b"second")
    assert path.read_bytes() == b"second"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path / "sub") == ["index.json"]


def test_missing_weight_file_is_a_clear_error(tmp_path):
    ckpt = AtomicCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope.pth.*MODEL.WEIGHTS"):
        ckpt.load(str(tmp_path / "nope.pth"))


def test_shape_mismatch_in_model_weights_is_an_error(tmp_path):
    torch.save({"model": {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}},
               tmp_path / "w.pth")
    ckpt = AtomicCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"weight: checkpoint \(3, 2\) vs model \(2, 2\)"):
        ckpt.load(str(tmp_path / "w.pth"))


def test_backbone_weights_are_loaded_strict_on_shapes_listing_keys(tmp_path, caplog):
    from duda_d2.modeling.backbone.mit import MIT_SPECS, MixVisionTransformer
    from duda_d2.modeling.network import load_backbone_weights

    source = MixVisionTransformer(MIT_SPECS["b0"])
    state = source.state_dict()
    state.pop("norm4.weight")
    state["head.weight"] = torch.zeros(1000, 256)
    torch.save({"model": state}, tmp_path / "b0.pth")
    target = MixVisionTransformer(MIT_SPECS["b0"])
    with caplog.at_level("WARNING"):
        missing, unexpected = load_backbone_weights(target, str(tmp_path / "b0.pth"))
    assert missing == ["norm4.weight"] and unexpected == ["head.weight"]
    assert "norm4.weight" in caplog.text and "head.weight" in caplog.text
    torch.testing.assert_close(target.block1[0].attn.q.weight, source.block1[0].attn.q.weight)

    with pytest.raises(ValueError, match="another variant"):
        load_backbone_weights(MixVisionTransformer(MIT_SPECS["b1"]), str(tmp_path / "b0.pth"))
    with pytest.raises(FileNotFoundError, match="convert_pretrained.py"):
        load_backbone_weights(target, str(tmp_path / "missing.pth"))


def test_a_backbone_file_that_mostly_does_not_match_is_an_error(tmp_path, caplog):
    from duda_d2.modeling.backbone.mit import MIT_SPECS, MixVisionTransformer
    from duda_d2.modeling.network import load_backbone_weights

    target = MixVisionTransformer(MIT_SPECS["b0"])
    # A whole run's model_final.pth: the backbone's tensors under network.backbone.*
    run = {f"network.backbone.{k}": v for k, v in target.state_dict().items()}
    torch.save({"model": run, "iteration": 9}, tmp_path / "model_final.pth")
    with pytest.raises(ValueError, match=r"match only 0 of .*whole training run.*MODEL\.WEIGHTS"):
        load_backbone_weights(target, str(tmp_path / "model_final.pth"))
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"keys look like \['conv1.weight'\]"):
        load_backbone_weights(target, str(tmp_path / "other.pth"))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_backbone_weights(target, str(tmp_path / "empty.pth"))
    # 95 % of the tensors: loaded, and the count is logged.
    state = target.state_dict()
    for name in list(state)[: len(state) // 20]:
        state.pop(name)
    torch.save(state, tmp_path / "most.pth")
    with caplog.at_level("INFO", logger="duda_d2"):
        load_backbone_weights(target, str(tmp_path / "most.pth"))
    assert f"loaded {len(state)} of {len(target.state_dict())} backbone tensors" in caplog.text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_checkpoints_are_readable_by_other_users_under_the_usual_umask(tmp_path, umask_022):
    ckpt = AtomicCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path))
    ckpt.save("model_final", iteration=1)
    for name in ("model_final.pth", "last_checkpoint"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize("content", [b"", os.urandom(4096)], ids=["empty", "random"])
def test_a_corrupt_weight_file_names_the_file_and_the_key(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    ckpt = AtomicCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"weights\.pth' \(MODEL\.WEIGHTS\) is not a readable "
                                         r"checkpoint") as error:
        ckpt.load(str(path))
    assert error.value.__suppress_context__  # no pickle/zip traceback above the message
    with pytest.raises(ValueError, match=r"\(MODEL\.WEIGHTS\)"):
        ckpt.resume_or_load(str(path), resume=True)  # nothing to resume: MODEL.WEIGHTS


def test_a_corrupt_last_checkpoint_names_the_file_and_last_checkpoint(tmp_path):
    ckpt = AtomicCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path))
    ckpt.save("model_0000001", iteration=1)
    data = (tmp_path / "model_0000001.pth").read_bytes()
    (tmp_path / "model_0000001.pth").write_bytes(data[:len(data) // 2])  # a truncated copy
    with pytest.raises(ValueError, match=r"model_0000001\.pth' \(named by .*last_checkpoint\) "
                                         r"is not a readable checkpoint"):
        ckpt.resume_or_load("", resume=True)
    os.remove(tmp_path / "model_0000001.pth")
    with pytest.raises(FileNotFoundError, match=r"model_0000001\.pth' \(named by "
                                                r".*last_checkpoint\) does not exist"):
        ckpt.resume_or_load("", resume=True)
