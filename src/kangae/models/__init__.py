from .zoo import DEFAULT_MODEL, MODELS, ModelEntry, Normalize, Recipe, create_model, get_entry

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelEntry", "Normalize", "Recipe", "create_model", "get_entry"]
