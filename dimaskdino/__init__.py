"""dimask: DI-MaskDINO and MaskDINO, and the detection-segmentation imbalance between them."""

__version__ = "0.1.0"
