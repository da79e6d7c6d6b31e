import torch

from detectron2.modeling import build_model

from duda_d2.modeling.inference import slide_inference, whole_inference
from helpers import config


def _model(*opts):
    cfg = config("configs/synthetic/Base-SYNTHETIC.yaml", "MODEL.SEM_SEG_HEAD.EMBED_DIM", 32, *opts)
    torch.manual_seed(0)
    return build_model(cfg)


def _inputs(sizes, with_labels=True):
    out = []
    for h, w in sizes:
        x = {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8)}
        if with_labels:
            x["sem_seg"] = torch.randint(0, 19, (h, w))
        out.append(x)
    return out


def test_training_returns_a_cross_entropy_loss_that_ignores_padding():
    model = _model().train()
    losses = model(_inputs([(64, 64), (48, 60)]))
    assert set(losses) == {"loss_sem_seg"}
    losses["loss_sem_seg"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_ignore_only_labels_give_zero_loss():
    model = _model().train()
    inputs = _inputs([(64, 64)])
    inputs[0]["sem_seg"][:] = 255
    assert model(inputs)["loss_sem_seg"].item() == 0.0


def test_inference_returns_logits_at_the_original_size():
    model = _model().eval()
    inputs = _inputs([(50, 70)], with_labels=False)
    inputs[0].update(height=100, width=140)  # the file's size before a test-time resize
    with torch.no_grad():
        out = model(inputs)
    assert out[0]["sem_seg"].shape == (19, 100, 140)


def test_slide_with_one_covering_window_equals_whole_image():
    model = _model().eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        whole = whole_inference(model.network, images)["sem_seg"]
        slide = slide_inference(model.network, images, (64, 96), (32, 32))["sem_seg"]
    torch.testing.assert_close(slide, whole)


def test_slide_averages_overlapping_windows():
    model = _model().eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        slide = slide_inference(model.network, images, (64, 64), (64, 32))["sem_seg"]
        left = whole_inference(model.network, images[..., :64])["sem_seg"]
        right = whole_inference(model.network, images[..., 32:])["sem_seg"]
    torch.testing.assert_close(slide[..., :32], left[..., :32])
    torch.testing.assert_close(slide[..., 32:64], (left[..., 32:] + right[..., :32]) / 2)
    torch.testing.assert_close(slide[..., 64:], right[..., 32:])


def test_slide_mode_is_selected_by_config():
    model = _model("MODEL.INFERENCE.MODE", "slide", "MODEL.INFERENCE.CROP_SIZE", (32, 32),
                   "MODEL.INFERENCE.STRIDE", (16, 16)).eval()
    with torch.no_grad():
        out = model(_inputs([(40, 56)], with_labels=False))
    assert out[0]["sem_seg"].shape == (19, 40, 56)
