"""Where the panoptic data sets of the project live (their registration: ``panoptic_registration``).

A panoptic split reads the images and train-id labels of a split of a ``DatasetLayout`` (the
semantic one of the same data) plus a folder of panoptic PNGs and one panoptic JSON, both in
cityscapesscripts' ``createPanopticImgs`` format (see ``duda_d2.prep.panoptic_format``):

- ``synthetic_uda_{source_train,target_train,target_val}_panoptic``: the synthetic benchmark's
  panoptic variant, rendered larger than the semantic one (``datasets/prepare_synthetic.py
  --panoptic``) into ``synthetic_uda/panoptic/``;
- ``synthia_panoptic_train``: SYNTHIA's images and train-id labels, panoptic ground truth from
  its instance ids (``datasets/prepare_synthia.py --panoptic``);
- ``cityscapes_fine_panoptic_{train,val}``: Detectron2's names and files (``gtFine/
  cityscapes_panoptic_{train,val}[.json]``, written by cityscapesscripts' createPanopticImgs,
  which ``datasets/prepare_cityscapes.py --panoptic`` runs).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Tuple

from .layout import DatasetLayout, SplitLayout
from .project_datasets import CITYSCAPES, SYNTHIA

__all__ = ["PANOPTIC_FLAG", "PanopticSplit", "SYNTHETIC_UDA_PANOPTIC", "PANOPTIC_SPLITS",
           "panoptic_split"]

PANOPTIC_FLAG = " --panoptic"  # the prepare scripts' option that writes the panoptic files


@dataclass(frozen=True)
class PanopticSplit:
    """A registered panoptic split: the layout split giving its images and train-id labels, and
    its panoptic PNG folder and JSON (relative to the layout's dataset folder)."""

    name: str
    layout: DatasetLayout  # its prepare_script writes the panoptic files too
    split: str  # the split of ``layout`` listing the images and train-id labels
    panoptic_root: str
    panoptic_json: str
    # more metadata paths relative to the dataset folder (Detectron2's Cityscapes ``gt_dir``)
    extra_paths: Dict[str, str] = field(default_factory=dict)


def _synthetic_split(domain: str, split: str) -> SplitLayout:
    folder = f"{domain}/{split}"
    return SplitLayout(f"synthetic_uda_{domain}_{split}_panoptic",
                       ((f"{folder}/images", f"{folder}/labels"),), metadata={"domain": domain},
                       image_id_prefix=f"{domain}_{split}_", has_rcs_stats=True)


# The panoptic variant of the synthetic benchmark: its own folder, images, labels and size.
SYNTHETIC_UDA_PANOPTIC = DatasetLayout(
    title="synthetic panoptic", folder="synthetic_uda/panoptic", image_suffix=".png",
    label_suffix=".png", prepare_script="datasets/prepare_synthetic.py" + PANOPTIC_FLAG,
    splits=(_synthetic_split("source", "train"), _synthetic_split("target", "train"),
            _synthetic_split("target", "val")))

# The semantic layouts, with the prepare command that also writes the panoptic files.
_SYNTHIA = dataclasses.replace(SYNTHIA, prepare_script=SYNTHIA.prepare_script + PANOPTIC_FLAG)
_CITYSCAPES = dataclasses.replace(CITYSCAPES,
                                  prepare_script=CITYSCAPES.prepare_script + PANOPTIC_FLAG)


def _synthetic(split: SplitLayout) -> PanopticSplit:
    folder = split.folders[0][0].rsplit("/", 1)[0]  # <domain>/<split>
    return PanopticSplit(split.name, SYNTHETIC_UDA_PANOPTIC, split.name, f"{folder}/panoptic",
                         f"{folder}/panoptic.json")


def _cityscapes(split: str) -> PanopticSplit:
    return PanopticSplit(f"cityscapes_fine_panoptic_{split}", _CITYSCAPES,
                         f"cityscapes_fine_sem_seg_{split}", f"gtFine/cityscapes_panoptic_{split}",
                         f"gtFine/cityscapes_panoptic_{split}.json",
                         extra_paths={"gt_dir": f"gtFine/{split}"})


PANOPTIC_SPLITS: Tuple[PanopticSplit, ...] = (
    *(_synthetic(split) for split in SYNTHETIC_UDA_PANOPTIC.splits),
    PanopticSplit("synthia_panoptic_train", _SYNTHIA, "synthia_train", "GT/synthia_panoptic",
                  "GT/synthia_panoptic.json"),
    _cityscapes("train"), _cityscapes("val"))


def panoptic_split(name: str) -> PanopticSplit:
    """The panoptic split registered as ``name``."""
    for split in PANOPTIC_SPLITS:
        if split.name == name:
            return split
    raise KeyError(f"no panoptic split {name!r}; known: {[s.name for s in PANOPTIC_SPLITS]}")
