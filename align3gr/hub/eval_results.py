"""The model-index of a published model: its test Recall@K and NDCG@K as `huggingface_hub.EvalResult`s, with the
evaluation protocol (leave-one-out test target; the whole catalogue ranked by SCID-constrained beam search of
width B; the user's earlier items excluded or not) in the dataset's `args` and K in each metric's, so the Hub
shows them as evaluation results and a reader can tell how they were measured.
"""

from __future__ import annotations

import re

from huggingface_hub import EvalResult

from align3gr.hub.dataset_terms import DatasetTerms

TASK_TYPE = "sequential-recommendation"
TASK_NAME = "Sequential recommendation (next item)"
RANKING_METRIC = re.compile(r"^(recall|ndcg)@(\d+)$")
METRIC_NAMES = {"recall": "Recall", "ndcg": "NDCG"}
DECODERS = {
    "beam_search": "SCID-constrained beam search",
    "generate": "SCID-constrained beam search (transformers generate)",
    "exhaustive": "exact SCID log-probability of every item",
}


def decoding_text(decoder: str, width: int | str) -> str:
    """How a model's ranked list is decoded, in words: the decoder, and the beam width of the beam searches."""
    name = DECODERS.get(decoder, decoder)
    return name if decoder == "exhaustive" else f"{name}, beam width {width}"


def evaluation_protocol(metrics: dict) -> dict:
    """The protocol of an evaluation's metrics.json: split, users, full-catalogue ranking, decoder, beam width,
    whether the user's history was excluded."""
    decoder = metrics.get("decoder", "beam_search")
    protocol = {
        "protocol": "leave-one-out",
        "target": "each user's last item",
        "users": metrics.get("num_users"),
        "candidates": "full catalogue",
        "catalogue_size": metrics.get("catalogue_size"),
        "decoder": DECODERS.get(decoder, decoder),
        "beam_size": metrics.get("beam_size"),
        "history_excluded": bool(metrics.get("exclude_history", False)),
    }
    return {key: value for key, value in protocol.items() if value is not None}


def protocol_text(metrics: dict) -> str:
    """The protocol of an evaluation's metrics.json as one sentence."""
    protocol = evaluation_protocol(metrics)
    history = "excluded from" if protocol["history_excluded"] else "allowed in"
    return (
        f"Every user's last item (leave-one-out, {metrics.get('split', 'test')} split), ranked among all"
        f" {protocol.get('catalogue_size', '?')} items of the catalogue by {protocol['decoder']} (beam width"
        f" {protocol.get('beam_size', '?')}); the user's earlier items are {history} the ranking."
    )


def eval_results(metrics: dict, dataset: DatasetTerms) -> list[EvalResult]:
    """One EvalResult per `recall@K` and `ndcg@K` of a stage's test metrics.json, in its order."""
    protocol = evaluation_protocol(metrics)
    results = []
    for key, value in metrics.items():
        match = RANKING_METRIC.match(key)
        if match is None:
            continue
        name, k = match.group(1), int(match.group(2))
        results.append(
            EvalResult(
                task_type=TASK_TYPE,
                task_name=TASK_NAME,
                dataset_type=dataset.id,
                dataset_name=dataset.name,
                dataset_split=metrics.get("split", "test"),
                dataset_args=protocol,
                metric_type=f"{name}_at_{k}",
                metric_value=value,
                metric_name=f"{METRIC_NAMES[name]}@{k}",
                metric_args={"k": k},
            )
        )
    return results
