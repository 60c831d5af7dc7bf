"""Built-in multi-task architectures: ``small_resnet`` (the default), ``resnet50_deeplab``, and
any backbone: ``torchvision`` and ``timm`` models, or ``import`` from the user's own code."""

from sparsekit.hookspecs import Register, hookimpl

from .import_model import ImportBackbone
from .resnet50_deeplab import ResNet50DeepLabBuilder
from .small_resnet import SmallResNetBuilder
from .timm_models import TimmBackbone
from .torchvision_models import TorchvisionBackbone

__all__ = [
    "ImportBackbone",
    "ResNet50DeepLabBuilder",
    "SmallResNetBuilder",
    "TimmBackbone",
    "TorchvisionBackbone",
    "sparsekit_register_models",
]


@hookimpl
def sparsekit_register_models(register: Register) -> None:
    """Register the built-in model builders."""
    register(SmallResNetBuilder)
    register(ResNet50DeepLabBuilder)
    register(TorchvisionBackbone)
    register(TimmBackbone)
    register(ImportBackbone)
