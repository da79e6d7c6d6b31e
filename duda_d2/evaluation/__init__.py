from .sem_seg_evaluation import UDASemSegEvaluator, subset_miou  # noqa: F401
