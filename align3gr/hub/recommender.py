"""`align3gr.load_recommender`: a published model (a folder from `align3gr push`, a Hub repo, or a run's stage folder)
ready to rank items for a user's history with the prompt and constrained beam search of the run's evaluation.

For a test user of the run, `recommend(history, k)` with the user's whole history before the test target
(`Dataset.seen_before(user, "test")`) returns exactly the first k items of the run's
`eval/test/STAGE/predictions.jsonl`: the same task-A prompt (the stored template, the history cut to its last
`max_history` items as `align3gr.hub.settings` resolves it, the user's SCID when the model was trained with one and the
user is known), a beam width of max(k, the evaluation's beam size), and, with `exclude_seen` (by default the
evaluation's `exclude_history`), no item of the history: the trie-constrained search ranks only the other items. A
user the code tables do not know (or no `user_id`) is named "the user", as in the SFT data of models trained without
user SCIDs; an unknown item in the history is an error naming the closest IDs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from align3gr.data.dataset import Dataset
from align3gr.decode import Ranked, build_decoder
from align3gr.decode.sharded import shard_order
from align3gr.decode.trie import trie_for_model
from align3gr.errors import ConfigError, DataError, closest_matches
from align3gr.hub.settings import InferenceSettings, settings_of
from align3gr.models.loading import load_for_inference
from align3gr.scid.code_tables import ITEM_CODES, USER_CODES, load_code_tables
from align3gr.sft.tasks import SEQ_FORMATS, TaskBuilder

log = logging.getLogger(__name__)


class Recommender:
    """A model with its code tables and inference settings; `recommend(user_history, k)` gives item IDs, best first."""

    def __init__(
        self,
        model,
        tokenizer,
        item_codes: dict[str, list[str]],
        user_codes: dict[str, list[str]],
        settings: InferenceSettings,
        batch_size: int = 16,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.item_codes = item_codes
        self.user_codes = user_codes
        self.settings = settings
        self.batch_size = batch_size
        self.trie = trie_for_model(item_codes, tokenizer, model)
        templates = {SEQ_FORMATS[settings.seq_format]: [settings.seq_template]}
        no_data = Dataset(items={}, users={}, sequences={})  # seq prompts need only the code tables
        form = {"templates": templates, "seq_format": settings.seq_format}
        self._anonymous = TaskBuilder(no_data, item_codes, {}, with_user_scid=False, **form)
        self._named = (
            TaskBuilder(no_data, item_codes, user_codes, with_user_scid=True, **form)
            if settings.with_user_scid
            else None
        )

    def prompt(self, user_history: Sequence[str], user_id: str | None = None, name: str = "user_history") -> list[int]:
        """The task-A prompt IDs of a history (item IDs, oldest first; its last `max_history` items are used); errors
        name it `name`."""
        if isinstance(user_history, str) or not user_history:
            raise ConfigError(f"{name} must be a non-empty list of item IDs, got {user_history!r}")
        items = [str(item) for item in user_history]
        unknown = [item for item in items if item not in self.item_codes]
        if unknown:
            raise DataError(
                f"item {unknown[0]!r} of {name} is not in the catalogue ({len(unknown)} unknown; the model "
                f"knows the {len(self.item_codes)} items of {ITEM_CODES}); "
                + closest_matches(unknown[0], self.item_codes)
            )
        builder = self._anonymous
        if self._named is not None and user_id is not None:
            if str(user_id) in self.user_codes:
                builder = self._named
            else:
                log.warning("user %r has no SCID in %s: the prompt names 'the user' instead", user_id, USER_CODES)
        history = items[-self.settings.max_history :]
        return builder.seq_prompt_ids(self.tokenizer, str(user_id), history, self.settings.seq_template)

    def excludes_seen(self, exclude_seen: bool | None = None) -> bool:
        """Whether a ranking leaves the history's items out: `exclude_seen`, or when None the evaluation's
        `exclude_history`."""
        return self.settings.exclude_history if exclude_seen is None else exclude_seen

    def beam_width(self, k: int, beam_size: int | None = None) -> int:
        """The width of the search that ranks `k` items: max(k, `beam_size` or the evaluation's)."""
        return max(k, beam_size or self.settings.beam_size)

    def rank(
        self,
        histories: Sequence[Sequence[str]],
        k: int,
        user_ids: Sequence[str | None] | None = None,
        exclude_seen: bool | None = None,
        beam_size: int | None = None,
    ) -> list[Ranked]:
        """One `Ranked` (items best first, their SCID log-probabilities) per history, each cut to `k` items, none of
        its history's items with `exclude_seen` (None: as the evaluation, its `exclude_history`); the beam width is
        max(k, `beam_size` or the evaluation's). Prompts are decoded in batches of similar lengths, as the evaluation
        decodes them."""
        check_k(k, len(self.item_codes))
        if beam_size is not None and beam_size < 1:
            raise ConfigError(f"beam_size must be >= 1, got {beam_size}")
        user_ids = [None] * len(histories) if user_ids is None else list(user_ids)
        if len(user_ids) != len(histories):
            raise ConfigError(f"{len(histories)} histories but {len(user_ids)} user_ids")
        count = len(histories)
        prompts = [self.prompt(histories[i], u, where(i, u, count)) for i, u in enumerate(user_ids)]
        exclude_seen = self.excludes_seen(exclude_seen)
        width = self.beam_width(k, beam_size)
        decoder = build_decoder(self.settings.decoder, self.model, self.tokenizer, self.trie, width, self.batch_size)
        order = shard_order([len(p) for p in prompts], self.batch_size, 0, 1)  # batches of similar lengths
        seen = [[str(item) for item in histories[i]] for i in order] if exclude_seen else None
        by_index = dict(zip(order, decoder.recommend([prompts[i] for i in order], exclude=seen), strict=True))
        return [Ranked(r.items[:k], r.scores[:k], r.returned, r.valid) for r in map(by_index.get, range(len(prompts)))]

    def recommend(
        self, user_history: Sequence[str], k: int = 10, user_id: str | None = None, exclude_seen: bool | None = None
    ) -> list[str]:
        """The k items to recommend after `user_history` (item IDs, oldest first), best first, none of the history
        with `exclude_seen` (None: as the evaluation)."""
        return self.rank([user_history], k, [user_id], exclude_seen)[0].items

    def recommend_with_scores(
        self, user_history: Sequence[str], k: int = 10, user_id: str | None = None, exclude_seen: bool | None = None
    ) -> list[tuple[str, float]]:
        """`recommend` with the log-probability of each item's SCID given the prompt."""
        ranked = self.rank([user_history], k, [user_id], exclude_seen)[0]
        return list(zip(ranked.items, ranked.scores, strict=True))


def where(index: int, user_id: str | None, count: int) -> str:
    """How errors name history `index` of `count` given to `rank`: by its place and user when there are several."""
    if count == 1:
        return "user_history"
    return f"histories[{index}]" + (f" (user {user_id!r})" if user_id is not None else "")


def check_k(k: int, catalogue_size: int) -> None:
    """A ConfigError unless 1 <= k <= `catalogue_size`: a ranked list holds each item of the catalogue at most once."""
    if not 1 <= k <= catalogue_size:
        raise ConfigError(f"k must be between 1 and the catalogue's {catalogue_size} items, got {k}")


def model_folder(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """A local folder as is, or the snapshot of a Hub repo (downloaded or cached), holding the item code table;
    clear errors otherwise, and for a `revision` of a local folder (it would not select anything)."""
    if Path(path_or_repo_id).is_dir():
        if revision is not None:
            raise ConfigError(
                f"--revision {revision!r}: applies to Hub repo ids only, and {path_or_repo_id} is a local folder"
            )
        folder = Path(path_or_repo_id)
    else:
        folder = snapshot(str(path_or_repo_id), revision)
    if not (folder / ITEM_CODES).is_file():
        raise ConfigError(
            f"{folder}: no {ITEM_CODES}; expected a folder written by `align3gr push` or a run's sft/ or dpo/STAGE/"
        )
    return folder


def snapshot(name: str, revision: str | None) -> Path:
    """The local snapshot of Hub repo `name`, or a ConfigError saying why there is none."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, revision=revision))
    except HFValidationError:
        raise ConfigError(f"{name!r}: no such local folder, and not a Hub repo id (expected 'owner/name')") from None
    except LocalEntryNotFoundError:
        raise ConfigError(
            f"{name!r}: no such local folder, and the Hub repo is neither reachable (offline, or HF_HUB_OFFLINE=1) "
            "nor in the local Hugging Face cache"
        ) from None
    except HfHubHTTPError as err:
        raise ConfigError(f"{name!r}: no such local folder, and the Hub refused the download: {err}") from None


def load_recommender(
    path_or_repo_id: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    batch_size: int = 16,
    data: str | Path | None = None,
    trust_remote_code: bool = False,
) -> Recommender:
    """A `Recommender` from a folder written by `align3gr push`, a Hub repo id (at `revision`), or a run's `sft/` or
    `dpo/STAGE/` folder; the model goes to `device` (default: the accelerator if there is one, else the CPU), in
    `dtype` (default: the dtype its test evaluation ran in, so its ranked lists are the evaluation's). A folder without
    `align3gr.json` cuts histories to the `max_history` of the dataset folder `data` (default: its run's `data/`), as
    `align3gr evaluate` does. `trust_remote_code` runs model code shipped with the model or its base: only for a
    source you trust."""
    folder = model_folder(path_or_repo_id, revision)
    settings = settings_of(folder, Path(data) if data is not None else None)
    item_codes, user_codes = load_code_tables(folder)
    model, tokenizer = load_for_inference(folder, dtype or settings.dtype, trust_remote_code)
    model.to(device or torch.accelerator.current_accelerator() or "cpu")
    log.info("%s: %s, %d items, stage %s", path_or_repo_id, type(model).__name__, len(item_codes), settings.stage)
    return Recommender(model, tokenizer, item_codes, user_codes, settings, batch_size)
