"""Datasets: the MNIST family (an IDX reader, lookup, download and MD5 checks), generated sets with
known answers, one decoder for user pictures, and fast batches."""

from .dataset import DataFallbackWarning, ImageSet, clear_cache, load_dataset, where_is
from .idx import read_idx, write_idx
from .integrity import DataIntegrityWarning, strict_data
from .loader import BatchLoader, random_shift
from .registry import DATASETS, DatasetSpec, GeneratedSpec, get_spec

__all__ = [
    "DATASETS", "BatchLoader", "DataFallbackWarning", "DataIntegrityWarning", "DatasetSpec", "GeneratedSpec",
    "ImageSet", "clear_cache", "get_spec", "load_dataset", "random_shift", "read_idx", "strict_data",
    "where_is", "write_idx",
]
