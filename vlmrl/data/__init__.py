"""Offline datasets: the dataset type, HDF5/.npz files, collection, relabeling and d3rlpy conversion."""

from vlmrl.data.dataset import DatasetError, OfflineDataset, validate_arrays
from vlmrl.data.storage import load_dataset, save_dataset

__all__ = ["DatasetError", "OfflineDataset", "load_dataset", "save_dataset", "validate_arrays"]
