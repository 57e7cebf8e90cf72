"""`align3gr recommend`: the top K items for a user of the dataset, or for a history given as item IDs or titles, from
a run's stage folder, a published folder or a Hub repo, with titles and scores.

A user's history is the one the run's test evaluation ranks after (`Dataset.seen_before(user, "test")`: every item
but the last), so the command prints that user's line of `eval/test/STAGE/predictions.jsonl` cut to K (same prompt,
beam width and history exclusion, `align3gr.hub.recommender`). The dataset is `--data`, else the run's `data/` when
the model is a stage folder of a run; titles come from it, else from the published folder's `item_titles.json`, and
so does the prompts' history length when the folder has no `align3gr.json` (`align3gr.hub.settings`). Every input is
checked, with the closest users, IDs or titles named, before the model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from align3gr.console import format_table
from align3gr.data.dataset import Dataset, load_dataset
from align3gr.errors import ConfigError, closest_matches
from align3gr.hub.eval_results import decoding_text
from align3gr.hub.item_titles import ITEM_TITLES, ItemTitles
from align3gr.hub.recommender import check_k, load_recommender, model_folder
from align3gr.hub.run_layout import run_data
from align3gr.hub.settings import SETTINGS_FILE
from align3gr.scid.code_tables import ITEM_CODES, load_code_tables


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its rank (1 = best), ID, title (None without titles) and SCID log-probability."""

    rank: int
    item_id: str
    title: str | None
    score: float


@dataclass
class Recommendations:
    """What `align3gr recommend` prints: the items, and what they were ranked from (model, user, history)."""

    model: str
    stage: str | None
    user_id: str | None
    history: list[str]
    items: list[Recommendation]
    exclude_seen: bool
    beam_size: int
    decoder: str
    catalogue_size: int
    titles_source: str
    evaluation_excluded: bool

    def render(self) -> str:
        """The table (rank, item_id, title, score) under a header saying what the score is, and a summary line."""
        who = f"user {self.user_id}" if self.user_id is not None else "the given history"
        stage = f" (stage {self.stage})" if self.stage else ""
        title = (
            f"\nTop {len(self.items)} for {who} from {self.model}{stage}\nscore: log-probability of the item's SCID "
            f"given the prompt ({decoding_text(self.decoder, self.beam_size)})"
        )
        rows = [{**asdict(item), "title": item.title or ""} for item in self.items]
        seen = "excluded from the ranking" if self.exclude_seen else "not excluded"
        summary = (
            f"{len(self.items)} of {self.catalogue_size} items; history: {len(self.history)} items ({seen}); "
            f"titles: {self.titles_source}"
        )
        if self.exclude_seen != self.evaluation_excluded:
            flag = "--exclude-seen" if self.evaluation_excluded else "--no-exclude-seen"
            summary += f"; the run's evaluation ranked {'without' if self.evaluation_excluded else 'with'} "
            summary += f"history items: {flag} to rank as it did"
        return "\n".join([format_table(rows, title), summary])

    def to_json(self) -> str:
        """The items as a JSON list of `{rank, item_id, title, score}`."""
        return json.dumps([asdict(item) for item in self.items], indent=2, ensure_ascii=False)


def user_history(dataset: Dataset, user_id: str) -> list[str]:
    """The history the test evaluation ranks after for `user_id`, or a ConfigError naming the closest users."""
    if user_id not in dataset.sequences:
        raise ConfigError(
            f"--user {user_id!r}: no such user in {dataset.path}; " + closest_matches(user_id, dataset.sequences)
        )
    return dataset.seen_before(user_id, "test")


def known_items(items: Sequence[str], item_codes: dict[str, list[str]], folder: Path, option: str) -> list[str]:
    """`items`, or a ConfigError naming `option`, the first item the model does not know and the closest IDs."""
    for item_id in items:
        if item_id not in item_codes:
            raise ConfigError(
                f"{option}: item {item_id!r} is not in {folder / ITEM_CODES}; " + closest_matches(item_id, item_codes)
            )
    return list(items)


def run_recommend(
    model: str | Path,
    *,
    user: str | None = None,
    history: Sequence[str] | None = None,
    history_titles: Sequence[str] | None = None,
    data: str | Path | None = None,
    k: int = 10,
    exclude_seen: bool | None = None,
    beam_size: int | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> Recommendations:
    """The top `k` items of `model` (stage folder, published folder or Hub repo id) for exactly one of `user` (a user
    of the dataset), `history` (item IDs) or `history_titles`; `exclude_seen` and `beam_size` None: the evaluation's;
    `revision` only with a Hub repo id; `trust_remote_code` runs model code shipped with it (`load_recommender`)."""
    if sum(x is not None for x in (user, history, history_titles)) != 1:
        raise ConfigError("give exactly one of --user, --history or --history-titles")
    if k < 1 or (beam_size is not None and beam_size < 1):
        raise ConfigError(f"-k and --beam-size must be >= 1, got {k} and {beam_size}")
    folder = model_folder(model, revision)
    item_codes, _ = load_code_tables(folder)
    check_k(k, len(item_codes))
    published = (folder / SETTINGS_FILE).is_file()
    data_dir = Path(data) if data is not None else None if published else run_data(folder)
    dataset = load_dataset(data_dir) if data_dir is not None else None
    titles = ItemTitles.of_dataset(dataset, item_codes) if dataset else ItemTitles.of_folder(folder)
    if user is not None:
        if dataset is None:
            raise ConfigError(f"--user needs the dataset: {model} is not a stage folder of a run; give --data DATA_DIR")
        items = known_items(user_history(dataset, user), item_codes, folder, f"--user {user!r} (in {dataset.path})")
    elif history is not None:
        ids = [part.strip() for value in history for part in value.split(",") if part.strip()]
        if not ids:
            raise ConfigError("--history: expected item IDs, e.g. --history 1,50,181")
        items = known_items(ids, item_codes, folder, "--history")
    else:
        if titles is None:
            raise ConfigError(f"--history-titles: {folder} has no {ITEM_TITLES}; give --data DATA_DIR for the titles")
        items = titles.item_ids(history_titles)
    recommender = load_recommender(folder, data=data_dir, trust_remote_code=trust_remote_code)
    exclude_seen = recommender.excludes_seen(exclude_seen)
    ranked = recommender.rank([items], k, [user], exclude_seen, beam_size)[0]
    return Recommendations(
        model=str(model),
        stage=recommender.settings.stage,
        user_id=user,
        history=items,
        items=[
            Recommendation(rank, item, titles.titles.get(item) if titles else None, score)
            for rank, (item, score) in enumerate(zip(ranked.items, ranked.scores, strict=True), start=1)
        ],
        exclude_seen=exclude_seen,
        beam_size=recommender.beam_width(k, beam_size),
        decoder=recommender.settings.decoder,
        catalogue_size=len(item_codes),
        titles_source=titles.source if titles else f"none ({folder} has no {ITEM_TITLES} and no --data was given)",
        evaluation_excluded=recommender.settings.exclude_history,
    )
