"""Procedural synthetic "game -> real" street scenes with Cityscapes train-id labels.

``render_scene`` draws one scene; ``datasets/prepare_synthetic.py`` writes a whole benchmark.
Pure numpy + OpenCV, so it can be used without torch or Detectron2.
"""
from .render import STYLES, SYNTHETIC_CLASSES, Layout, render_layout, render_scene

__all__ = ["STYLES", "SYNTHETIC_CLASSES", "Layout", "render_layout", "render_scene"]
