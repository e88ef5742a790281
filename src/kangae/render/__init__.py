"""Pictures from probe results: PNG grids, per-target images and GIFs (no computation)."""

from .images import save_gif, save_grid, save_image, to_pil

__all__ = ["save_gif", "save_grid", "save_image", "to_pil"]
