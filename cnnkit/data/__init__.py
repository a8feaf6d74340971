"""Data: sources (registry), in-memory data sets, preprocessing, augmentation and batching."""

from cnnkit.data.datasets import ArrayData, DataBundle
from cnnkit.data.preprocess import Preprocess
from cnnkit.data.sources import SOURCES, SourceOptions, load_data, register_source

__all__ = ["SOURCES", "ArrayData", "DataBundle", "Preprocess", "SourceOptions", "load_data", "register_source"]
