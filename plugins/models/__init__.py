"""Built-in multi-task architectures: ``small_resnet`` (the default) and ``resnet50_deeplab``."""

from sparsekit.hookspecs import Register, hookimpl

from .resnet50_deeplab import ResNet50DeepLabBuilder
from .small_resnet import SmallResNetBuilder

__all__ = ["ResNet50DeepLabBuilder", "SmallResNetBuilder", "sparsekit_register_models"]


@hookimpl
def sparsekit_register_models(register: Register) -> None:
    """Register the built-in model builders."""
    register(SmallResNetBuilder)
    register(ResNet50DeepLabBuilder)
