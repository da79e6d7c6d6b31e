"""duda_d2: a Detectron2 plugin for Distilled Unsupervised Domain Adaptation (DUDA).

``make`` installs the pinned releases of requirements.txt (and requirements-dev.txt); in your
own environment ``pip install -e .`` (or ``.[dev]``) installs these ranges,
then ``python tools/install_detectron2.py`` installs Detectron2 and panopticapi (README:
Detectron2 installation). tests/test_packaging.py checks that every third-party module
imported under duda_d2/, tools/ and datasets/ is listed here, and that requirements*.txt
agree.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    # torch.amp.GradScaler(device) (AMP with float16) needs torch 2.3; the other torch APIs the
    # code uses are older (scaled_dot_product_attention 2.0, weights_only= 1.13).
    "torch>=2.3",
    "torchvision>=0.18",  # the release built for torch 2.3 (transforms.v2.functional)
    "numpy",
    "pillow",
    "opencv-python-headless",  # cv2: dataset preparation, Detectron2's visualizer
    "timm>=0.9",  # timm.layers, features_only backbones
    "kornia>=0.7",  # ColorJiggle: DACS/DAFormer/MIC colour jitter
    "cityscapesscripts",  # the Cityscapes label table; json2labelImg in prepare_cityscapes.py
    "fvcore",  # the poly LR schedule, FLOP counting
    "pyyaml",
    "tqdm",
    "tabulate",  # tools' tables
    "matplotlib",  # tools' plots and prediction pictures
    # Deployment (tools/export_student.py, tools/benchmark_deploy.py): the ONNX export goes
    # through torch.export and onnxscript (torch.onnx's dynamo exporter), runs and is
    # quantised to int8 with ONNX Runtime; opset 18 needs onnxruntime >= 1.16.
    "onnx>=1.16",
    "onnxscript>=0.1",
    "onnxruntime>=1.17",
    # Model interchange (tools/convert_model.py, tools/convert_pretrained.py): Hugging Face
    # SegFormer checkpoints (config.json + .safetensors / .bin) in and out.
    "transformers>=4.40",
    "safetensors>=0.4",
    # Detectron2 itself is not listed: it is not published on PyPI under its own name; nor is
    # panopticapi (imported by Detectron2's panoptic code and our panoptic evaluator): the
    # official one is not on PyPI and PyPI's panopticapi-lite pins numpy<2, so
    # tools/install_detectron2.py installs it without dependencies. The
    # PyPI snapshot tools/install_detectron2.py installs comes without its dependencies
    # (pip --no-deps), so those it imports at run time are listed here (tensorboard: its
    # default training event writer). Its hydra-core and black serve LazyConfig only, which
    # the project does not use.
    "iopath",
    "pycocotools>=2.0.2",
    "yacs>=0.1.8",
    "termcolor>=1.1",
    "cloudpickle",
    "omegaconf>=2.1,<2.4",
    "tensorboard",
    "packaging",
]

# Every package the datasets/prepare_*.py scripts import is needed at run time as well, so
# there is no "prep" group.
EXTRAS_REQUIRE = {
    "dev": ["pytest", "pytest-timeout"],  # the test suite (requirements-dev.txt)
}

setup(
    name="duda_d2",
    version="0.1.0",
    description="DUDA: distilled unsupervised domain adaptation for lightweight semantic "
    "segmentation, as a Detectron2 plugin",
    packages=find_packages(include=["duda_d2", "duda_d2.*"]),
    python_requires=">=3.9",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
