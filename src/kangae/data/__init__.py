"""MNIST-family datasets: an IDX reader, lookup and download, and fast batches."""

from .dataset import DataFallbackWarning, ImageSet, clear_cache, load_dataset
from .idx import read_idx, write_idx
from .integrity import DataIntegrityWarning, strict_data
from .loader import BatchLoader, random_shift
from .registry import DATASETS, DatasetSpec, get_spec

__all__ = [
    "DATASETS", "BatchLoader", "DataFallbackWarning", "DataIntegrityWarning", "DatasetSpec", "ImageSet",
    "clear_cache", "get_spec", "load_dataset", "random_shift", "read_idx", "strict_data", "write_idx",
]
