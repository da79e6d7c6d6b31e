"""Every data set of a run predicts one class list: the source's, the target's, the evaluated
ones' -- and the model has as many outputs. Checked before training or evaluation, because a
mismatch otherwise shows up as a silent wrong mIoU (classes compared by index) or a late crash."""
from __future__ import annotations

from typing import Dict, List, Tuple

from detectron2.data import MetadataCatalog

__all__ = ["check_class_lists"]


def check_class_lists(cfg) -> List[str]:
    """The run's class names; ``ValueError`` naming the data sets whose lists differ, or a
    ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` that is not their length."""
    names = list(dict.fromkeys([*cfg.DATASETS.TRAIN, *cfg.DATASETS.SOURCE_TRAIN,
                                *cfg.DATASETS.TARGET_TRAIN, *cfg.DATASETS.TEST]))
    lists: Dict[Tuple[str, ...], List[str]] = {}
    for name in names:
        classes = getattr(MetadataCatalog.get(name), "stuff_classes", None)
        if classes is not None:
            lists.setdefault(tuple(classes), []).append(name)
    if not lists:
        return []
    if len(lists) > 1:
        described = "; ".join(f"{', '.join(ds)}: {len(c)} classes ({', '.join(c[:4])}...)"
                              for c, ds in lists.items())
        raise ValueError(f"the data sets of this run do not share one class list ({described}). "
                         f"Prepare every labelled data set with the same class map "
                         f"(datasets/prepare_labelled_folder.py --class-map)")
    classes = list(next(iter(lists)))
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if num_classes != len(classes):
        raise ValueError(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} but the data sets "
                         f"{', '.join(names)} have {len(classes)} classes "
                         f"({', '.join(classes)}): set it to {len(classes)}")
    uda = cfg.MODEL.UDA
    outside = [c for c in uda.FD_CLASSES if not 0 <= c < num_classes]
    if uda.FD_LAMBDA > 0 and outside:
        raise ValueError(f"MODEL.UDA.FD_CLASSES {list(uda.FD_CLASSES)} names classes {outside} "
                         f"that this run's {num_classes} classes do not have: list the indices "
                         f"of your 'thing' classes ({', '.join(classes)}), or set FD_LAMBDA 0")
    return classes
