"""fedseg: federated learning for brain-tumor segmentation."""

__version__ = "0.1.0"
