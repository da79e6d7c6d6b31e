import torch

from detectron2.modeling import build_backbone, build_sem_seg_head

from helpers import config


def test_head_gives_stride4_logits_with_configured_embedding():
    cfg = config("configs/networks/mit_b0_segformer.yaml", "MODEL.SEM_SEG_HEAD.EMBED_DIM", 64)
    backbone = build_backbone(cfg)
    head = build_sem_seg_head(cfg, backbone.output_shape())
    assert head.linear_fuse[0].in_channels == 4 * 64
    assert [l.in_features for l in head.embed.linear_c] == [32, 64, 160, 256]
    logits = head(backbone(torch.randn(2, 3, 96, 128)))
    assert logits.shape == (2, 19, 24, 32)


def test_head_rejects_features_the_backbone_does_not_give():
    cfg = config("configs/networks/mit_b0_segformer.yaml",
                 "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res2", "p6"])
    backbone = build_backbone(cfg)
    try:
        build_sem_seg_head(cfg, backbone.output_shape())
    except ValueError as e:
        assert "p6" in str(e)
    else:
        raise AssertionError("expected a ValueError naming p6")
