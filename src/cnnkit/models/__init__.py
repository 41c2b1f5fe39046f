"""The model zoo. Importing this package registers every architecture."""
from cnnkit.models import lenet, resnet  # noqa: F401
from cnnkit.models import alexnet, googlenet, vgg  # noqa: F401
from cnnkit.models import densenet, external, resnet_cifar, xception  # noqa: F401
from cnnkit.models import efficientnet  # noqa: F401
from cnnkit.models import detection  # noqa: F401  (after the classifiers: detectors build on them)
from cnnkit.models import segmentation  # noqa: F401  (after detection: its encoders reuse StageFeatures)

__all__ = ["lenet", "resnet", "densenet", "external", "resnet_cifar", "xception"]
__all__ += ["alexnet", "googlenet", "vgg", "efficientnet", "detection", "segmentation"]
