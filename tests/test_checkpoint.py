import os

import pytest
import torch

from duda_d2.engine.checkpoint import AtomicCheckpointer, atomic_write_bytes


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


def test_missing_weight_file_is_a_clear_error(tmp_path):
    ckpt = AtomicCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope.pth.*MODEL.WEIGHTS"):
        ckpt.load(str(tmp_path / "nope.pth"))
