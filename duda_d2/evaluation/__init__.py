from .class_subsets import dataset_class_subsets, subset_mean, subset_metric_name  # noqa: F401
from .panoptic_evaluation import (  # noqa: F401
    PANOPTIC_EVALUATOR_TYPES, UDAPanopticEvaluator, label_map_to_segments)
from .sem_seg_evaluation import UDASemSegEvaluator, subset_miou  # noqa: F401
from .prediction_writer import PredictionWriter, write_mask_and_overlay  # noqa: F401
