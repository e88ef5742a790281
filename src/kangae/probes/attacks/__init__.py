"""Fooling a classifier (issue 7): template addition (post 002), FGSM and PGD (Goodfellow et al.
2015; Madry et al. 2018), the fewest pixel edits that change a reading (post 000), and
input-gradient saliency. Every function takes any ``nn.Module`` and float images in [0, 1]
(uint8 accepted), works batched on the model's device and never changes the model.
"""

from .edits import EditResult, fewest_pixel_edits
from .gradient import AttackResult, RobustnessCurve, fgsm, pgd, robustness_curve, saliency
from .template import TemplateResult, template_attack

__all__ = [
    "AttackResult", "EditResult", "RobustnessCurve", "TemplateResult", "fewest_pixel_edits", "fgsm",
    "pgd", "robustness_curve", "saliency", "template_attack",
]
