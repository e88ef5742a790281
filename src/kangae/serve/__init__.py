"""``kangae serve``: a drawing page and JSON API that explain a model's answer (post 000).

The post's browser demo would not recognize a hand-drawn 9 and could not say why; this one
shows what the model sees after MNIST-style preprocessing, what it looks at, its idea of
each class, and the fewest edits that change its mind.
"""

from .app import app_for, create_app
from .engine import Engine

__all__ = ["Engine", "app_for", "create_app"]
