"""Hard-parameter-sharing multi-task networks."""

from sparsekit.models.multitask import MultiTaskNet, backbone_conv_weights

__all__ = ["MultiTaskNet", "backbone_conv_weights"]
