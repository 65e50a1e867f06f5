"""detbench: config-driven object detection and instance segmentation for PyTorch."""

__version__ = "0.1.0"
