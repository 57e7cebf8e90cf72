"""Which dataset a run was trained on and the terms it is distributed under, for the model card's `datasets` field,
its model-index and its license section, from what the data stage recorded (`data/meta.json`: builder, source
files).

The published files hold item and user IDs and codes, never the data itself; the data's own terms still bind
whoever uses or redistributes it, so the card states them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MOVIELENS_TERMS = (
    "GroupLens Research's usage license: research use only; no commercial or revenue-bearing use and no"
    " redistribution of the data without the GroupLens Research Project's permission; no endorsement by the"
    " University of Minnesota may be stated or implied; publications must acknowledge the data set (F. Maxwell"
    " Harper and Joseph A. Konstan, The MovieLens Datasets: History and Context, ACM TiiS 2015)."
)
AMAZON_TERMS = (
    "The Amazon review data collected by Julian McAuley's group (UCSD) is shared for research purposes; its"
    " dataset page states the terms of use and the papers to cite."
)
YELP_TERMS = "Yelp's Dataset Terms of Use: academic, personal and other non-commercial use only."
LCREC_TERMS = (
    "An LC-Rec / LETTER format export: the terms of the dataset it was derived from apply (LC-Rec's own exports are"
    " subsets of the Amazon review data)."
)
LOCAL_TERMS = "A dataset built locally by the `{builder}` builder; its owner's terms apply."
MOVIELENS_FILES = {"u.data": "100k", "ml-100k.inter": "100k", "ratings.dat": "1m", "ml-1m.inter": "1m"}
AMAZON_META = re.compile(r"^meta_(.+?)\.json(\.gz)?$")


def slug(name: str) -> str:
    """`name` as a Hub-style identifier: lower case, runs of other characters made one hyphen."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.") or "dataset"


@dataclass(frozen=True)
class DatasetTerms:
    """A dataset's identifier (`datasets`, model-index `dataset.type`), display name, terms and where they are."""

    id: str
    name: str
    terms: str
    link: str | None


def movielens(files: list[str]) -> DatasetTerms:
    """MovieLens-100K or -1M by the files read (GroupLens or RecBole layout), else the RecBole atomic files' name."""
    link = "https://grouplens.org/datasets/movielens/"
    size = next((MOVIELENS_FILES[name] for name in files if name in MOVIELENS_FILES), None)
    if size is not None:
        return DatasetTerms(f"movielens-{size}", f"MovieLens-{size.upper()}", MOVIELENS_TERMS, link)
    stem = files[0].split(".")[0] if files else "movielens"
    return DatasetTerms(slug(stem), f"MovieLens ({stem})", MOVIELENS_TERMS, link)


def amazon(files: list[str]) -> DatasetTerms:
    """Amazon Reviews, named by the category of its `meta_CATEGORY.json(.gz)` file."""
    category = next((m.group(1) for m in map(AMAZON_META.match, files) if m), None)
    suffix = f"-{slug(category)}" if category else ""
    name = f"Amazon Reviews ({category.replace('_', ' ')})" if category else "Amazon Reviews"
    return DatasetTerms(
        f"amazon-reviews{suffix}", name, AMAZON_TERMS, "https://cseweb.ucsd.edu/~jmcauley/datasets.html"
    )


def dataset_terms(data_meta: dict) -> DatasetTerms:
    """The dataset of a run's `data/meta.json` (its `builder` and `sources`); a builder align3gr does not ship gives
    the builder's name and the owner's terms."""
    builder = data_meta.get("builder", {}).get("name", "unknown")
    files = [source["file"] for source in data_meta.get("sources", [])]
    if builder == "movielens":
        return movielens(files)
    if builder == "amazon":
        return amazon(files)
    if builder == "yelp":
        return DatasetTerms("yelp-open-dataset", "Yelp Open Dataset", YELP_TERMS, "https://www.yelp.com/dataset")
    if builder == "lcrec":
        stem = next((name.removesuffix(".inter.json") for name in files if name.endswith(".inter.json")), "lcrec")
        return DatasetTerms(slug(stem), f"{stem} (LC-Rec format)", LCREC_TERMS, None)
    return DatasetTerms(slug(builder), builder, LOCAL_TERMS.format(builder=builder), None)
