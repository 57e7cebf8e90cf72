"""SFT rows at tokenizer speed: batched rows equal the per-example ones, the stage's preparation equals TRL's, and
the row cache is reused, invalidated and written atomically."""

from __future__ import annotations

import copy
import logging
import socket
import subprocess
import sys

import pytest
from datasets import Dataset
from test_sft import code_tables, scid_tokenizer, small, tiny_qwen  # noqa: F401 (fixtures)
from tokenizers.processors import TemplateProcessing

from align3gr.sft.arguments import sft_arguments
from align3gr.sft.batch_encoding import VERIFY_EVERY, BatchEncoder
from align3gr.sft.config import SFTStageConfig
from align3gr.sft.data import (
    ROWS_FILE,
    TaskMixture,
    cached_rows,
    encode_example,
    encode_examples,
    rows_dataset,
    rows_key,
    tokenizer_fingerprint,
    trainer_rows,
)
from align3gr.sft.prompting import encode_prompt
from align3gr.sft.tasks import TASKS, TaskBuilder


@pytest.fixture(scope="module")
def examples(small):  # noqa: F811
    """Every task of the small MovieLens-100K slice in both forms of task A, a few hundred examples."""
    items, users = code_tables(small)
    mixture = TaskBuilder(small, items, users).build(TASKS[1:])[::7] + list(TaskBuilder(small, items, users).seq())
    return mixture[::5] + list(TaskBuilder(small, items, users, seq_format="stream").seq())[:60]


def plain(tokenizer):
    """A copy of `tokenizer` without a chat template and with a BOS token: Llama-2-style plain prompts."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = None
    tokenizer.add_special_tokens({"bos_token": "<s>"})
    return tokenizer


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_batched_rows_equal_the_per_example_rows_token_for_token(examples, scid_tokenizer, template):  # noqa: F811
    tokenizer = scid_tokenizer if template == "chat" else plain(scid_tokenizer)
    assert {e.task for e in examples} >= {"seq", "item_align", "user_align"} and any(e.listing for e in examples)
    max_length = 120  # leaves out the longest histories
    reference = rows_dataset((encode_example(e, tokenizer) for e in examples), max_length)
    rows = encode_examples(examples, tokenizer, max_length)
    assert 0 < len(rows) < len(examples)
    assert rows.to_dict() == reference.to_dict()
    assert rows.features == Dataset.from_dict(reference.to_dict()).features  # the types `datasets` would infer


def test_a_post_processor_that_adds_bos_keeps_the_piece_path(examples, scid_tokenizer, caplog):  # noqa: F811
    """Pieces are encoded without special tokens, like the reference: a Llama-style post-processor that puts a BOS
    before every encoding adds it to no piece, and the shortcut stays on."""
    tokenizer = plain(scid_tokenizer)
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)]
    )
    assert tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id  # the post-processor adds it
    encoder = BatchEncoder(tokenizer)
    texts = [e.prompt for e in examples][: 2 * VERIFY_EVERY]  # several verified texts
    with caplog.at_level(logging.WARNING, logger="align3gr.sft.batch_encoding"):
        assert encoder.prompts(texts).tolist() == [encode_prompt(tokenizer, t) for t in texts]
    assert encoder.shortcut and not caplog.text


@pytest.mark.parametrize("packing", [False, True])
def test_the_stages_preparation_equals_trls(examples, small, tiny_qwen, tmp_path, packing):  # noqa: F811
    from trl import SFTTrainer

    from align3gr.models.loading import load_model_and_tokenizer
    from align3gr.scid.tokens import scid_tokens
    from align3gr.scid.vocabulary import extend_vocabulary

    model, tokenizer = load_model_and_tokenizer(tiny_qwen)
    extend_vocabulary(model, tokenizer, scid_tokens(*code_tables(small)))
    rows = encode_examples(examples, tokenizer, 200)
    arguments = sft_arguments(SFTStageConfig(max_length=200, packing=packing), tmp_path, eval_steps=500)
    few = trainer_rows(rows.select(range(4)), arguments, packing)
    trainer = SFTTrainer(model=model, args=arguments, train_dataset=few, eval_dataset=few, processing_class=tokenizer)
    prepared = trainer._prepare_dataset(rows, tokenizer, arguments, packing, None, "train")
    ours = trainer_rows(rows, arguments, packing)
    assert ours.column_names == [c for c in prepared.column_names if c != "completion_mask"]
    assert ours.to_dict() == prepared.select_columns(ours.column_names).to_dict()


def test_the_model_loss_equals_the_models_own_and_builds_no_kv_cache(examples, small, tiny_qwen, tmp_path):  # noqa: F811
    """The loss through the output module on the answer positions only is the model's own loss on the labels, and
    the training forward keeps no KV cache (as TRL's loss), even when `use_cache` leaves the model's default on."""
    from align3gr.models.loading import load_model_and_tokenizer
    from align3gr.scid.tokens import scid_tokens
    from align3gr.scid.vocabulary import extend_vocabulary
    from align3gr.sft.trainer import SCIDSFTTrainer

    model, tokenizer = load_model_and_tokenizer(tiny_qwen)
    extend_vocabulary(model, tokenizer, scid_tokens(*code_tables(small)))
    config = SFTStageConfig(max_length=200, training_args={"use_cache": True})
    arguments = sft_arguments(config, tmp_path, eval_steps=500)
    rows = trainer_rows(encode_examples(examples[:4], tokenizer, 200), arguments, False)
    trainer = SCIDSFTTrainer(
        model=model, args=arguments, train_dataset=rows, eval_dataset=rows, processing_class=tokenizer, model_loss=True
    )
    batch = trainer._prepare_inputs(trainer.data_collator(list(rows)))
    loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
    assert outputs.cache is None
    expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_cached_rows_load_on_a_rerun_and_go_with_their_inputs(examples, scid_tokenizer, tmp_path, caplog, monkeypatch):  # noqa: F811
    import align3gr.sft.data as data

    folder = tmp_path / "rows"
    with caplog.at_level(logging.INFO, logger="align3gr.sft.data"):
        first = cached_rows(examples, scid_tokenizer, 200, folder)
        key = rows_key(examples, scid_tokenizer, 200)
        written = (folder / key / ROWS_FILE).stat().st_mtime_ns
        assert "tokenized" in caplog.text and [p.name for p in folder.iterdir()] == [key]
        caplog.clear()
        monkeypatch.setattr(data, "encoded_batches", lambda *a, **k: pytest.fail("tokenized again"))
        again = cached_rows(examples, scid_tokenizer, 200, folder)
        assert "loaded" in caplog.text and again.to_dict() == first.to_dict()
        assert (folder / key / ROWS_FILE).stat().st_mtime_ns == written
    monkeypatch.undo()

    other = copy.deepcopy(scid_tokenizer)
    other.chat_template = other.chat_template.replace("<|im_start|>assistant", "<|im_start|>model")
    changed = {
        "template": (examples, other, 200),
        "tokenizer": (examples, plain(scid_tokenizer), 200),
        "max_length": (examples, scid_tokenizer, 100),
        "examples": (examples[1:], scid_tokenizer, 200),
    }
    keys = {name: rows_key(*inputs) for name, inputs in changed.items()}
    assert len({key, *keys.values()}) == 5
    rows = cached_rows(*changed["template"], folder)
    assert [p.name for p in folder.iterdir()] == [keys["template"]]  # the rows of the old key are gone
    assert rows.to_dict() == encode_examples(*changed["template"]).to_dict() != first.to_dict()


def test_a_tokenizer_without_a_fast_backend_is_known_by_its_options_too(tmp_path):
    """Two slow tokenizers of one vocabulary that encode text otherwise (lower-casing) key their rows apart."""
    from transformers import ProphetNetTokenizer

    vocabulary = tmp_path / "vocab.txt"
    vocabulary.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[X_SEP]", "hello", "Hello"]) + "\n")
    lower, cased = (ProphetNetTokenizer(str(vocabulary), do_lower_case=case) for case in (True, False))
    assert getattr(lower, "backend_tokenizer", None) is None and lower("Hello").input_ids != cased("Hello").input_ids
    assert tokenizer_fingerprint(lower) != tokenizer_fingerprint(cased)
    assert tokenizer_fingerprint(lower) == tokenizer_fingerprint(ProphetNetTokenizer(str(vocabulary)))


def test_a_killed_writes_temporary_rows_are_ignored_and_removed(examples, scid_tokenizer, tmp_path):  # noqa: F811
    folder = tmp_path / "rows"
    key = rows_key(examples, scid_tokenizer, 200)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    half = folder / f".{key}.tmp-{socket.gethostname()}-{int(dead.stdout)}-0123abcd"
    half.mkdir(parents=True)
    (half / "data-00000-of-00001.arrow").write_bytes(b"half")
    rows = cached_rows(examples, scid_tokenizer, 200, folder)
    assert not half.exists() and [p.name for p in folder.iterdir()] == [key]
    assert rows.to_dict() == encode_examples(examples, scid_tokenizer, 200).to_dict()


def test_a_streamed_mixture_is_tokenized_into_the_same_rows(small, scid_tokenizer, tmp_path):  # noqa: F811
    builder = TaskBuilder(small, *code_tables(small))
    mixture = TaskMixture(builder, list(TASKS), 40, 0, {"seq": None})
    examples = list(mixture)
    rows = cached_rows(mixture, scid_tokenizer, 120, tmp_path / "rows")
    assert rows_key(mixture, scid_tokenizer, 120) == rows_key(examples, scid_tokenizer, 120)
    assert rows.to_dict() == encode_examples(examples, scid_tokenizer, 120).to_dict()
    assert 0 < len(rows) < len(examples)  # max_length 120 leaves the longest histories out


@pytest.mark.parametrize(
    ("architecture", "options"),
    [("Gemma2", {"final_logit_softcapping": 0.02, "head_dim": 8}), ("Granite", {"logits_scaling": 8.0})],
)
def test_model_loss_keeps_a_logit_transform(architecture, options, examples, small, tiny_qwen, tmp_path):  # noqa: F811
    """Gemma 2's soft-capping and Granite's scaling change the logits after the head: the loss takes the model's
    own logits there, so it is the model's own loss; the options TRL's loss has and this one does not are refused."""
    import torch
    import transformers

    from align3gr.errors import ConfigError
    from align3gr.models.loading import load_model_and_tokenizer
    from align3gr.scid.tokens import scid_tokens
    from align3gr.scid.vocabulary import extend_vocabulary
    from align3gr.sft.trainer import SCIDSFTTrainer

    _, tokenizer = load_model_and_tokenizer(tiny_qwen)
    config = getattr(transformers, f"{architecture}Config")(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id, **options,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path / architecture
    getattr(transformers, f"{architecture}ForCausalLM")(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    model, tokenizer = load_model_and_tokenizer(folder)
    extend_vocabulary(model, tokenizer, scid_tokens(*code_tables(small)))
    arguments = sft_arguments(SFTStageConfig(max_length=200), tmp_path / "out", eval_steps=500)
    rows = trainer_rows(encode_examples(examples[:4], tokenizer, 200), arguments, False)
    common = {"train_dataset": rows, "eval_dataset": rows, "processing_class": tokenizer, "model_loss": True}
    trainer = SCIDSFTTrainer(model=model, args=arguments, **common)
    assert trainer.logits_from_model
    batch = trainer._prepare_inputs(trainer.data_collator(list(rows)))
    expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(expected.item(), rel=1e-5)
    dft = sft_arguments(SFTStageConfig(max_length=200, training_args={"loss_type": "dft"}), tmp_path / "dft", 500)
    with pytest.raises(ConfigError, match=r"sft\.training_args loss_type='dft': .* which does not implement it"):
        SCIDSFTTrainer(model=model, args=dft, **common)


def test_model_loss_adds_a_routers_aux_loss(examples, small, tiny_qwen, tmp_path):  # noqa: F811
    """A mixture-of-experts model's load-balancing loss is part of its own loss; the output-layer loss adds it
    with the router's coefficient, as TRL's loss does."""
    import torch
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    from align3gr.models.loading import load_model_and_tokenizer
    from align3gr.scid.tokens import scid_tokens
    from align3gr.scid.vocabulary import extend_vocabulary
    from align3gr.sft.trainer import SCIDSFTTrainer

    _, tokenizer = load_model_and_tokenizer(tiny_qwen)
    config = Qwen2MoeConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
        shared_expert_intermediate_size=16, num_experts=4, num_experts_per_tok=2, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, router_aux_loss_coef=0.5, output_router_logits=True,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2MoeForCausalLM(config).save_pretrained(tmp_path / "moe")
    tokenizer.save_pretrained(tmp_path / "moe")
    model, tokenizer = load_model_and_tokenizer(tmp_path / "moe")
    extend_vocabulary(model, tokenizer, scid_tokens(*code_tables(small)))
    arguments = sft_arguments(SFTStageConfig(max_length=200), tmp_path / "out", eval_steps=500)
    rows = trainer_rows(encode_examples(examples[:4], tokenizer, 200), arguments, False)
    trainer = SCIDSFTTrainer(model=model, args=arguments, train_dataset=rows, eval_dataset=rows,
                             processing_class=tokenizer, model_loss=True)  # fmt: skip
    assert trainer.aux_loss_enabled and not trainer.logits_from_model
    batch = trainer._prepare_inputs(trainer.data_collator(list(rows)))
    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert own.aux_loss.item() > 0
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(own.loss.item(), rel=1e-5)
