import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# torch.jit.script deprecation warnings from Detectron2's import-time scripting are noise here.
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")

import pytest

from helpers import dataset_root, load_dataset_script  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny synthetic benchmark (real generator, few images) as $DETECTRON2_DATASETS."""
    root = str(tmp_path_factory.mktemp("datasets"))
    load_dataset_script("prepare_synthetic").prepare_synthetic(
        root, num_source=8, num_target=8, num_val=4, nproc=1)
    with dataset_root(root):
        yield root
