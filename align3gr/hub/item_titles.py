"""The titles of a model's items, so `align3gr recommend` prints titles and takes a history as titles: from the
run's dataset (or `--data`), else from the `item_titles.json` that `align3gr push` publishes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from align3gr.data.dataset import Dataset
from align3gr.errors import ConfigError, closest_matches
from align3gr.io import read_json_object, write_json

ITEM_TITLES = "item_titles.json"


@dataclass(frozen=True)
class ItemTitles:
    """Item ID -> title, where they came from, and the items' descriptions when a dataset gave them (to tell apart
    items sharing a title)."""

    titles: dict[str, str]
    source: str
    descriptions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_dataset(cls, dataset: Dataset, item_ids: Iterable[str] | None = None) -> ItemTitles:
        """The titles of `dataset`'s items (only those of `item_ids` when given: a model's catalogue)."""
        ids = dataset.items if item_ids is None else [i for i in item_ids if i in dataset.items]
        items = [dataset.items[i] for i in ids]
        return cls(
            {item.item_id: item.title for item in items},
            str(dataset.path or "the dataset"),
            {item.item_id: item.description for item in items if item.description},
        )

    @classmethod
    def of_folder(cls, folder: Path) -> ItemTitles | None:
        """The titles a published folder ships (`item_titles.json`), None when it has none."""
        path = folder / ITEM_TITLES
        return cls(read_json_object(path), str(path)) if path.is_file() else None

    def save(self, folder: Path) -> None:
        """Write `item_titles.json` (ID -> title) into `folder`."""
        write_json(folder / ITEM_TITLES, self.titles)

    def item_ids(self, titles: Sequence[str]) -> list[str]:
        """The item of each title (case-insensitive), or a ConfigError naming an unknown title with the closest
        ones, or a title several items share with those items' IDs."""
        by_title: dict[str, list[str]] = {}
        for item_id, title in self.titles.items():
            by_title.setdefault(title.strip().casefold(), []).append(item_id)
        ids = []
        for title in titles:
            found = by_title.get(title.strip().casefold())
            if not found:
                raise ConfigError(
                    f"--history-titles: no item is titled {title!r} in {self.source}; "
                    + closest_matches(title, self.titles.values())
                )
            if len(found) > 1:
                items = "; ".join(f"{i} ({self.descriptions.get(i, self.titles[i])})" for i in found)
                raise ConfigError(
                    f"--history-titles: {title!r} is the title of {len(found)} items: {items}; give the one meant "
                    "by its ID with --history"
                )
            ids.append(found[0])
        return ids
