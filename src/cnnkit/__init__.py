"""cnnkit: train, diagnose and use convolutional neural networks on images."""
__version__ = "0.1.0"

from cnnkit import api  # noqa: E402
from cnnkit.engine import callbacks  # noqa: E402
from cnnkit.engine.trainer import Trainer  # noqa: E402
from cnnkit.keras import History, Model  # noqa: E402
from cnnkit.models.registry import create_model, list_models, register_model  # noqa: E402
from cnnkit.runs.folder import load_model  # noqa: E402
from cnnkit.tasks import Batch, ClassificationTask, Task  # noqa: E402

__all__ = ["api", "callbacks", "Trainer", "History", "Model", "create_model", "list_models", "register_model",
           "load_model", "Batch", "ClassificationTask", "Task", "__version__"]
