"""Encoding by pieces gives `encode_prompt` / `encode_completion` token for token, takes the reference path for
tokenizers that do not encode pieces independently, and turns itself off when a verified text differs."""

from __future__ import annotations

import copy
import logging

import pytest
from test_sft import code_tables, scid_tokenizer, small, tiny_qwen  # noqa: F401 (fixtures)
from test_sft_rows import examples, plain  # noqa: F401 (fixtures)
from tokenizers import normalizers

from align3gr.sft.batch_encoding import VERIFY_EVERY, BatchEncoder
from align3gr.sft.prompting import encode_completion, encode_prompt

TRICKY = [
    "",
    "  leading and trailing  ",
    'He watched "Heat (1995)", "Toy Story", "Amélie", 12, 3.5, x,y , z ,, "end"',
    "an <unknown_1> span, a <a_1> lookalike and <<nested>> brackets",
    "line one\nline two, \n\n, three",
    "tabs\tand  double  spaces, ",
]


def texts_of(examples, tokenizer) -> list[str]:  # noqa: F811
    items, _ = code_tables_of(tokenizer)
    mixed_run = f"{items[0]}<unknown_2>{items[1]}, then {items[2]}{items[0]}"  # a run broken by a lookalike
    return [e.prompt for e in examples] + TRICKY + [f"a, {items[0]} , {items[1]}{items[2]}, b", mixed_run]


def code_tables_of(tokenizer) -> tuple[list[str], None]:
    """Some added SCID tokens of `tokenizer`."""
    return [t.content for t in tokenizer.added_tokens_decoder.values() if t.content.startswith("<a_")][:3], None


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_pieces_give_the_tokenizers_ids(examples, scid_tokenizer, template):  # noqa: F811
    tokenizer = scid_tokenizer if template == "chat" else plain(scid_tokenizer)
    encoder = BatchEncoder(tokenizer)
    assert encoder.shortcut
    texts = texts_of(examples, tokenizer)
    answers = [e.completion for e in examples] + TRICKY
    for start in range(0, len(texts), 97):  # several batches: pieces met earlier are reused
        batch = texts[start : start + 97]
        assert encoder.prompts(batch).tolist() == [encode_prompt(tokenizer, t) for t in batch]
    assert encoder.completions(answers).tolist() == [encode_completion(tokenizer, t) for t in answers]
    assert encoder.shortcut  # no verified text differed


def test_a_tokenizer_that_encodes_pieces_in_context_takes_the_reference_path(examples, scid_tokenizer):  # noqa: F811
    tokenizer = copy.deepcopy(scid_tokenizer)
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("_"), normalizers.NFC()])
    encoder = BatchEncoder(tokenizer)
    assert not encoder.shortcut
    texts = texts_of(examples, tokenizer)
    assert encoder.prompts(texts).tolist() == [encode_prompt(tokenizer, t) for t in texts]


def test_a_verified_difference_turns_the_shortcut_off(examples, scid_tokenizer, caplog):  # noqa: F811
    encoder = BatchEncoder(scid_tokenizer)
    texts = [e.prompt for e in examples][: 2 * VERIFY_EVERY]
    encoder.prompts(texts[:VERIFY_EVERY])
    frame_piece = encoder._split(encoder.frame[0] + texts[0])[2]  # the piece after <|im_start|>: 'user\n...'
    encoder.pieces.index[frame_piece] = encoder.pieces.index["<|im_start|>"]
    with caplog.at_level(logging.WARNING, logger="align3gr.sft.batch_encoding"):
        again = encoder.prompts(texts)
    assert again.tolist() == [encode_prompt(scid_tokenizer, t) for t in texts]
    assert not encoder.shortcut and "differs from the tokenizer" in caplog.text


def test_the_piece_table_starts_over_past_its_limit(examples, scid_tokenizer, monkeypatch):  # noqa: F811
    import align3gr.sft.batch_encoding as batch_encoding

    monkeypatch.setattr(batch_encoding, "MAX_PIECES", len(scid_tokenizer.added_tokens_decoder) + 20)
    encoder = BatchEncoder(scid_tokenizer)
    texts = texts_of(examples, scid_tokenizer)
    tables = set()
    for start in range(0, len(texts), 31):
        batch = texts[start : start + 31]
        assert encoder.prompts(batch).tolist() == [encode_prompt(scid_tokenizer, t) for t in batch]
        tables.add(id(encoder.pieces))
    assert len(tables) > 1 and encoder.shortcut
