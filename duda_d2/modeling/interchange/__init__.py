"""Model interchange with other code bases: whole trained networks in and out of this project.

``huggingface_segformer``: transformers' ``SegformerForSemanticSegmentation`` folders, both
ways. Each converter is its own submodule (imported on use, not here), so that one needs only
the packages of its own format; ``tools/convert_model.py`` is their command line.
"""
