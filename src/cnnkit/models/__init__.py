"""The model zoo. Importing this package registers every architecture."""
from cnnkit.models import (
    alexnet,
    densenet,
    detection,
    efficientnet,
    external,
    googlenet,
    lenet,
    resnet,
    resnet_cifar,
    segmentation,
    vgg,
    xception,
)

__all__ = ["lenet", "resnet", "densenet", "external", "resnet_cifar", "xception"]
__all__ += ["alexnet", "googlenet", "vgg", "efficientnet", "detection", "segmentation"]
