"""duda_d2: a Detectron2 plugin for Distilled Unsupervised Domain Adaptation (DUDA)."""
from setuptools import find_packages, setup

setup(
    name="duda_d2",
    version="0.1.0",
    description="DUDA: distilled unsupervised domain adaptation for lightweight semantic "
    "segmentation, as a Detectron2 plugin",
    packages=find_packages(include=["duda_d2", "duda_d2.*"]),
    python_requires=">=3.9",
    # Runtime dependencies are listed in requirements.txt; Detectron2 is not on PyPI under its
    # own name and is installed by tools/install_detectron2.py (see README).
    install_requires=["torch>=2.1", "torchvision", "numpy", "pillow", "timm", "fvcore"],
)
