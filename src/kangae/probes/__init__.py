"""Probes: ``probe(model, inputs, *, target=..., ...) -> Result`` over any ``nn.Module``.

Every probe takes pixels in [0, 1] (uint8 accepted) shaped ``(N, C, H, W)``, a ``target``
(an int for all, a sequence or tensor; see :mod:`kangae.probes.inputs`), follows the model's
device, leaves the model's mode, flags, hooks and the global RNG as it found them, and
returns a small dataclass of CPU tensors with a ``metrics`` dict.

- prototypes (what the model thinks a class looks like): :func:`search_prototypes`
  (post 000's pixel search), :func:`activation_maximization` and :func:`filter_grid`
  (post 004), :func:`weight_templates` (post 002), checked by :func:`verify_prototypes`;
  :func:`deep_dream` of the user's own pictures (post 004's next step);
- explanations (where a decision rests): :func:`explain` with any registered method,
  :func:`meaningful_perturbation`, :func:`extremal_perturbation` (post 001);
- faithfulness (are the explanations true): :func:`deletion_insertion`,
  :func:`pointing_hits`, :func:`sanity_check`;
- diagnostics: :func:`calibration_of`, :func:`temperature_scaling`, :func:`confusion_of`
  (and :func:`calibration`, :func:`confusion` on logits), :func:`embed_epochs` on features;
- fooling (issue 7): :func:`template_attack`, :func:`fgsm`, :func:`pgd`,
  :func:`robustness_curve`, :func:`fewest_pixel_edits`, :func:`saliency`.

Probes never import the CLI, the reports or the server; those import the probes.
"""

from .actmax import Regularizers, activation_maximization, filter_grid, standard_transforms
from .attacks import (
    AttackResult,
    EditResult,
    RobustnessCurve,
    TemplateResult,
    fewest_pixel_edits,
    fgsm,
    pgd,
    robustness_curve,
    saliency,
    template_attack,
)
from .attribution import METHODS as EXPLAIN_METHODS
from .attribution import explain
from .calibration import (
    CalibrationResult,
    TemperatureScaling,
    calibration,
    calibration_of,
    fit_temperature,
    temperature_scaling,
)
from .confusion import ConfusionResult, confusion, confusion_of
from .dream import deep_dream
from .embeddings import EmbeddingResult, embed_epochs
from .explanation import Explanation
from .faithfulness import deletion_insertion, pointing_hits, sanity_check
from .inputs import as_classes, as_images, as_target, model_device
from .masks import extremal_perturbation, meaningful_perturbation
from .prototypes import search_prototypes
from .result import PrototypeResult
from .templates import is_linear, weight_templates
from .verify import verify_prototypes

__all__ = [
    "EXPLAIN_METHODS", "AttackResult", "CalibrationResult", "ConfusionResult", "EditResult",
    "EmbeddingResult", "Explanation", "PrototypeResult", "Regularizers", "RobustnessCurve",
    "TemperatureScaling", "TemplateResult", "activation_maximization", "as_classes", "as_images",
    "as_target", "calibration",
    "calibration_of", "confusion", "confusion_of", "deep_dream", "deletion_insertion", "embed_epochs",
    "explain", "extremal_perturbation", "fewest_pixel_edits", "fgsm", "filter_grid", "fit_temperature",
    "is_linear",
    "meaningful_perturbation", "model_device", "pgd", "pointing_hits", "robustness_curve", "saliency",
    "sanity_check", "search_prototypes", "standard_transforms", "template_attack", "temperature_scaling",
    "verify_prototypes", "weight_templates",
]
