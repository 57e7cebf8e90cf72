"""The `data` stage: the canonical dataset every later stage reads, and the build that writes it."""

from align3gr.data.build import BuildResult, build_dataset
from align3gr.data.config import DataConfig, SourceConfig
from align3gr.data.dataset import Dataset, Example, load_dataset
from align3gr.data.schema import Item, Sequence, User

__all__ = [
    "BuildResult",
    "DataConfig",
    "Dataset",
    "Example",
    "Item",
    "Sequence",
    "SourceConfig",
    "User",
    "build_dataset",
    "load_dataset",
]
