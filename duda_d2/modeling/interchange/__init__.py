"""Whole trained networks in and out of other code bases (``tools/convert_model.py``):

- ``huggingface_segformer``: transformers' ``SegformerForSemanticSegmentation`` <-> MiT +
  ``SegFormerHead`` (import and export, identical logits);
- ``mmseg_daformer``: DAFormer's mmseg releases (MiT + DAFormer head) -> MiT + ``DAFormerHead``.

ImageNet encoder weights alone are ``tools/convert_pretrained.py``'s job
(``duda_d2.modeling.backbone.mit_convert``). Submodules are imported where they are used.
"""
