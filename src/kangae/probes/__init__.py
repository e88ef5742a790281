"""Probes: functions ``(model, inputs, ...) -> Result`` over any ``nn.Module``.

Probes never import the CLI or the reports; those import the probes.
"""

from .actmax import Regularizers, activation_maximization
from .prototypes import reference_search, search_prototypes
from .result import PrototypeResult
from .templates import is_linear, weight_templates
from .verify import verify_prototypes

__all__ = [
    "PrototypeResult", "Regularizers", "activation_maximization", "is_linear", "reference_search",
    "search_prototypes", "verify_prototypes", "weight_templates",
]
