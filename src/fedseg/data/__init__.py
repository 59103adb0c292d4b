"""Data layer: case discovery, NIfTI I/O, labels and regions, checks, splits, synthetic sites.

Only numpy, scipy, nibabel (and matplotlib for pictures) are imported here: the inference
path of an exported model runs on this layer without torch.
"""
