"""Checkpoints written before the issue-12 redesign (networks named ``network``, ``teacher``,
``large_student``, ``imnet_backbone``, ``class_disagreement``...) still load into today's
models. The old keys and shapes were recorded from the code before the redesign
(``tests/pins/state_dict_keys_before_issue12.json``); an old checkpoint is rebuilt from them."""
import json
import os

import pytest
import torch

from detectron2.modeling import build_model

from duda_d2.engine import AtomicCheckpointer
from helpers import REPO, config
from test_regression_pins import COMMON, RUNS

OLD_KEYS = os.path.join(REPO, "tests", "pins", "state_dict_keys_before_issue12.json")


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_checkpoint_from_before_the_redesign_loads(name, tmp_path):
    path, opts = RUNS[name]
    model = build_model(config(path, *COMMON, *opts))
    new_state = model.state_dict()
    old_shapes = json.load(open(OLD_KEYS))[name]
    assert len(old_shapes) == len(new_state)
    assert set(old_shapes) != set(new_state)  # the names did change
    # An old checkpoint: every old key with a distinct value of its recorded shape.
    generator = torch.Generator().manual_seed(0)
    old_state = {}
    for key, shape in sorted(old_shapes.items()):
        if key.endswith("num_batches_tracked"):
            old_state[key] = torch.randint(1, 100, shape, generator=generator)
        elif key.endswith("class_seen"):
            old_state[key] = torch.rand(shape, generator=generator) > 0.5
        else:
            old_state[key] = torch.randn(shape, generator=generator)
    file = str(tmp_path / "old_model_final.pth")
    torch.save({"model": old_state, "iteration": 3}, file)
    AtomicCheckpointer(model).load(file)
    loaded = model.state_dict()
    # Every loaded tensor is one of the old ones, each used once: nothing missing or random.
    remaining = {k: v for k, v in old_state.items()}
    for key, value in loaded.items():
        match = [k for k, v in remaining.items()
                 if v.shape == value.shape and v.dtype == value.dtype and torch.equal(v, value)]
        assert match, f"{key} was not loaded from the old checkpoint"
        del remaining[match[0]]
    assert not remaining
    # And each old network went to the same role (old prefix -> the network now in that role).
    roles = {"network.": model.inference_network(), "teacher.": model.teacher}
    if hasattr(model, "large_student"):
        roles["large_student."] = model.large_student
    for prefix, network in roles.items():
        for key, value in network.state_dict().items():
            assert torch.equal(value, old_state[prefix + key]), prefix + key
