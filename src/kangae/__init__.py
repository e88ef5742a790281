"""kangae (考え, "thought"): what is this image classifier thinking?"""

__version__ = "0.1.0"

from .data import load_dataset  # noqa: E402
from .errors import KangaeError  # noqa: E402
from .models import create_model  # noqa: E402
from .training.run import Run, load, open_model, train  # noqa: E402
from .training.trainer import Trainer, evaluate  # noqa: E402

# ``kangae.train`` is the function; the package that holds the trainer is ``kangae.training``.

__all__ = ["KangaeError", "Run", "Trainer", "__version__", "create_model", "evaluate", "load",
           "load_dataset", "open_model", "train"]
