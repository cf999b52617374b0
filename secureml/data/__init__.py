"""Loading data sets: named sets, image folders, arrays and text files, split for training.

    from secureml.data import load_dataset
    ds = load_dataset({"name": "cifar10", "limit": 5000}, seed=0)

See docs/data.md for formats, where named sets are looked for, the options and the cache.
"""
from .config import DataConfig
from .dataset import Dataset
from .loader import load_dataset
from .sources import list_sources
from .vectorize import TextVectorizer

__all__ = ["DataConfig", "Dataset", "TextVectorizer", "list_sources", "load_dataset"]
