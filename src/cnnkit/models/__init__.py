"""The model zoo. Importing this package registers every architecture."""
from cnnkit.models import lenet, resnet  # noqa: F401

__all__ = ["lenet", "resnet"]
