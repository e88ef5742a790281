"""kangae (考え, "thought"): what is this image classifier thinking?"""

__version__ = "0.1.0"

from .data import load_dataset  # noqa: E402
from .errors import KangaeError  # noqa: E402
from .models import create_model  # noqa: E402
from .train.run import Run, load  # noqa: E402
from .train.run import train as _train  # noqa: E402
from .train.trainer import Trainer, evaluate  # noqa: E402

train = _train  # the function shadows the ``kangae.train`` package name on purpose

__all__ = ["KangaeError", "Run", "Trainer", "__version__", "create_model", "evaluate", "load",
           "load_dataset", "train"]
