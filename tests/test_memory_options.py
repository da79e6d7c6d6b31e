"""Memory options (issue 16): activation checkpointing of the large networks gives the same
losses, gradients and BatchNorm statistics as without it (1e-5, float32); reduced-precision
passes of frozen networks keep float32 weights and outputs."""
import pytest
import torch
from torch import nn

from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng

from duda_d2.modeling.activation_checkpoint import checkpointed
from duda_d2.uda.precision import autocast_to, float_outputs
from helpers import config
from test_duda import CONFIG, TINY, _step

# The large pair as in DUDA's recipe at a tiny size: MiT + DAFormer head with the separable
# ASPP (BatchNorm layers, dropout, drop-path all active), FD and MIC on.
LARGE = ["MODEL.DUDA.LARGE_NETWORK_OPTS", ["MODEL.MIT.VARIANT", "b0",
                                           "MODEL.SEM_SEG_HEAD.EMBED_DIM", "16",
                                           "MODEL.SEM_SEG_HEAD.FUSION", "aspp_dw",
                                           "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS", "[1, 2]"],
         "MODEL.UDA.FD_LAMBDA", 0.005, "MODEL.UDA.FD_RANDOM_REFERENCE", True,
         "MODEL.UDA.FD_CLASSES", list(range(19)), "MODEL.UDA.FD_PURITY", 0.0,
         "MODEL.UDA.MIC_LAMBDA", 1.0, "MODEL.UDA.MIC_BLOCK_SIZE", 8]


def _two_steps(*opts):
    """Losses, large-student gradients and every network's state after two DUDA steps from
    the same seed (pre-adaptation, then distillation)."""
    seed_all_rng(0)
    torch.manual_seed(0)
    model = build_model(config(CONFIG, *TINY, *LARGE, *opts)).train()
    model.load_state_dict(_reference_weights(model))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # the student moved away from FD's reference: a non-zero FD
        for p in model.large_pair.student.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    seed_all_rng(1)
    torch.manual_seed(1)
    out = []
    for iteration in (0, 2):
        losses, _ = _step(model, iteration)
        grads = {n: p.grad.clone() for n, p in model.large_pair.student.named_parameters()
                 if p.grad is not None}
        out.append(({k: v.item() for k, v in losses.items()}, grads))
    return out, model.state_dict()


_WEIGHTS = {}


def _reference_weights(model):
    """One set of initial weights for every variant (built once, reused)."""
    if "state" not in _WEIGHTS:
        _WEIGHTS["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    return _WEIGHTS["state"]


def test_large_activation_checkpointing_changes_no_number():
    plain, plain_state = _two_steps()
    saved, saved_state = _two_steps("MODEL.DUDA.LARGE_ACTIVATION_CHECKPOINTING", True)
    for (losses_a, grads_a), (losses_b, grads_b) in zip(plain, saved):
        assert losses_a.keys() == losses_b.keys() and "loss_mic" in losses_a
        assert losses_a["loss_fd"] > 0
        for k in losses_a:
            assert losses_b[k] == pytest.approx(losses_a[k], abs=1e-5, rel=1e-5), k
        assert grads_a.keys() == grads_b.keys() and len(grads_a) > 50
        for k in grads_a:
            torch.testing.assert_close(grads_b[k], grads_a[k], atol=1e-5, rtol=1e-5)
    # BatchNorm running statistics (and batch counters) were not updated twice.
    for k, v in plain_state.items():
        if "running_" in k or "num_batches_tracked" in k:
            torch.testing.assert_close(saved_state[k], v, atol=1e-6, rtol=1e-6)


def test_the_option_reaches_the_large_networks_only():
    model = build_model(config(CONFIG, *TINY, *LARGE,
                               "MODEL.DUDA.LARGE_ACTIVATION_CHECKPOINTING", True))
    assert model.large_pair.student.backbone.activation_checkpointing
    assert model.large_pair.student.head.activation_checkpointing
    assert not model.small_student.backbone.activation_checkpointing


def test_checkpointed_recomputation_keeps_batchnorm_statistics():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Dropout(0.5))
    twin = nn.Sequential(*[m for m in __import__("copy").deepcopy(block)])
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    torch.manual_seed(5)
    block(x).square().sum().backward()
    torch.manual_seed(5)
    checkpointed(twin, x).square().sum().backward()
    torch.testing.assert_close(twin[0].weight.grad, block[0].weight.grad)
    torch.testing.assert_close(twin[1].running_mean, block[1].running_mean)
    assert twin[1].num_batches_tracked.item() == block[1].num_batches_tracked.item() == 1


def test_frozen_passes_under_autocast_give_float32_and_keep_weights():
    torch.manual_seed(0)
    net = nn.Linear(8, 4)
    weight = net.weight.detach().clone()
    with torch.no_grad(), autocast_to("bfloat16", torch.device("cpu")):
        out = net(torch.randn(2, 8))
    assert out.dtype == torch.bfloat16 and net.weight.dtype == torch.float32
    assert float_outputs({"sem_seg": out})["sem_seg"].dtype == torch.float32
    assert torch.equal(net.weight, weight)
    with pytest.raises(ValueError, match="precision 'int8' unknown"):
        autocast_to("int8", torch.device("cpu"))


def test_teacher_autocast_changes_pseudo_labels_little_and_is_validated():
    base, _ = _two_steps()
    low, _ = _two_steps("MODEL.UDA.TEACHER_AUTOCAST", "bfloat16",
                        "MODEL.UDA.FD_REFERENCE_AUTOCAST", "bfloat16")
    for (losses_a, _), (losses_b, _) in zip(base, low):
        for k in losses_a:  # bfloat16 targets: close, not equal
            assert losses_b[k] == pytest.approx(losses_a[k], rel=0.05, abs=1e-3), k
    with pytest.raises(ValueError, match="TEACHER_AUTOCAST"):
        build_model(config(CONFIG, *TINY, "MODEL.UDA.TEACHER_AUTOCAST", "half"))


def test_checkpointing_is_the_default_of_the_paper_configs_not_of_the_cpu_ones():
    from duda_d2 import load_config
    from helpers import REPO
    import os

    for name, expected in (("configs/gta2cs/duda.yaml", True),
                           ("configs/cs2acdc/duda.yaml", True),
                           ("configs/synthetic/duda.yaml", False),
                           ("configs/synthetic_panoptic/duda.yaml", False)):
        cfg = load_config(os.path.join(REPO, name))
        assert cfg.MODEL.DUDA.LARGE_ACTIVATION_CHECKPOINTING is expected, name
