"""Softmax-DPO (Align3GR Eq. 3): the loss, its agreement with TRL's DPO at K = 1, the shared-prompt forward,
the reference of a LoRA stage, precomputed reference log-probabilities and bad rows."""

from __future__ import annotations

import math
import re

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from align3gr.dpo.collator import SoftmaxPreferenceCollator
from align3gr.dpo.config import COLLATION_OPTIONS, LOSS_OPTIONS
from align3gr.dpo.shared_prompt import FORWARDS, cached_completion_logps, packed_attention_mask
from align3gr.dpo.softmax_dpo_loss import softmax_dpo_loss
from align3gr.dpo.trainer import SoftmaxDPOConfig, SoftmaxDPOTrainer
from align3gr.errors import ConfigError, DataError
from align3gr.models.attention import attention_implementation
from align3gr.models.tiny import build_tiny_causal_lm
from align3gr.seeding import seeded

TEXTS = [f"user {u} watched movie {m} and liked the story of the film {m + u}" for u in range(40) for m in range(5)]
ROWS = [
    {"prompt": "user 3 watched movie 1, then", "chosen": "movie 4", "rejected": ["movie 2", "film 7", "story"]},
    {"prompt": "what does user 12 watch next after movie 3 and movie 9?", "chosen": "film 1", "rejected": ["movie 0"]},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_causal_lm(TEXTS, tmp_path_factory.mktemp("dpo") / "tiny", vocab_size=400, hidden_size=32)


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").float()


def config(cls, tmp_path, **options):
    options = {"bf16": False, "max_steps": 1, **options}
    return cls(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, report_to=[], use_cpu=True,
               beta=0.3, logging_steps=1, save_strategy="no", **options)  # fmt: skip


def softmax_trainer(model, tokenizer, tmp_path, rows=ROWS, **options):
    return SoftmaxDPOTrainer(
        model=model,
        args=config(SoftmaxDPOConfig, tmp_path, **options),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def batch_of(trainer):
    return next(iter(trainer.get_train_dataloader()))


def test_loss_by_hand():
    chosen, rejected = torch.tensor([-2.0]), torch.tensor([[-3.0, -1.0]])
    ref_chosen, ref_rejected = torch.tensor([-2.5]), torch.tensor([[-2.0, -1.5]])
    out = softmax_dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)
    r_w, r_l = 0.5 * 0.5, [0.5 * -1.0, 0.5 * 0.5]
    expected = -math.log(1 / (1 + math.exp(math.log(sum(math.exp(r - r_w) for r in r_l)))))
    assert out.losses.item() == pytest.approx(expected, rel=1e-6)
    masked = softmax_dpo_loss(chosen, rejected, ref_chosen, ref_rejected, 0.5, torch.tensor([[True, False]]))
    assert masked.losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(r_l[0] - r_w))), rel=1e-6)


def test_one_rejected_gives_trls_sigmoid_dpo_loss(tiny, tmp_path):
    """Same model, same token IDs: Softmax-DPO at K = 1 is TRL's own DPO loss."""
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    pairs = [{**row, "rejected": row["rejected"][0]} for row in ROWS]
    ours = softmax_trainer(
        load(tiny), tokenizer, tmp_path / "ours", rows=[{**p, "rejected": [p["rejected"]]} for p in pairs]
    )
    theirs = DPOTrainer(
        model=load(tiny), args=config(DPOConfig, tmp_path / "trl"), train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
    )  # fmt: skip
    rows = [ours.train_dataset[i] for i in range(len(pairs))]
    trl_rows = [{**r, "rejected_ids": r["rejected_ids"][0]} for r in rows]
    with torch.no_grad():
        loss = ours.compute_loss(ours.model, SoftmaxPreferenceCollator(tokenizer.pad_token_id)(rows))
        expected = theirs.compute_loss(theirs.model, theirs.data_collator(trl_rows))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("shared", ["packed", "cache"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prompt_forward_gives_the_plain_loss_and_gradients(tiny, tmp_path, shared, attention):
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny, attn_implementation=attention).float()
    batch = batch_of(softmax_trainer(load(tiny), tokenizer, tmp_path))
    results = []
    for forward in (FORWARDS["plain"], FORWARDS[shared]):
        model.zero_grad()
        logps = forward(model, batch)
        reference = logps.detach() - 0.1
        loss = softmax_dpo_loss(
            logps[:, 0], logps[:, 1:], reference[:, 0], reference[:, 1:], 0.3, batch["rejected_mask"]
        )
        loss.losses.mean().backward()
        results.append((logps.detach(), [p.grad.clone() for p in model.parameters()]))
    (plain, plain_grads), (shared, shared_grads) = results
    torch.testing.assert_close(shared, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(shared_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_the_packed_forward_reads_the_attention_of_a_ddp_wrapped_model(tiny, tmp_path):
    """Under DDP the trainer hands the forward its `DistributedDataParallel` wrapper, which has no config: an eager
    model still gets its additive mask (a boolean one would be added to the scores as 0 / 1)."""
    from torch.nn.parallel import DistributedDataParallel

    batch = batch_of(softmax_trainer(load(tiny), AutoTokenizer.from_pretrained(tiny), tmp_path))
    model = AutoModelForCausalLM.from_pretrained(tiny, attn_implementation="eager").float()
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(model)
        assert attention_implementation(wrapped) == "eager"
        with torch.no_grad():
            torch.testing.assert_close(FORWARDS["packed"](wrapped, batch), FORWARDS["plain"](model, batch))
    finally:
        torch.distributed.destroy_process_group()


def test_log_probabilities_equal_an_unpadded_forward(tiny, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    trainer = softmax_trainer(load(tiny), tokenizer, tmp_path)
    model = load(tiny)
    row = trainer.train_dataset[1]
    with torch.no_grad():
        logps = cached_completion_logps(model, SoftmaxPreferenceCollator(tokenizer.pad_token_id)([row]))
        ids = torch.tensor([row["prompt_ids"] + row["chosen_ids"]])
        log_softmax = torch.log_softmax(model(ids).logits[0, :-1], -1)
    start = len(row["prompt_ids"])
    expected = log_softmax[torch.arange(start - 1, ids.shape[1] - 1), ids[0, start:]].sum()
    assert logps[0, 0].item() == pytest.approx(expected.item(), abs=1e-4)


def lora_stage(tiny, tmp_path):
    """A model that continues a trained LoRA adapter with trained token rows, as the SFT stage's SCID rows."""
    with seeded(0):
        rows = {"embed_tokens": list(range(20, 300))}
        config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], trainable_token_indices=rows)
        peft_model = get_peft_model(load(tiny), config)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "trainable_tokens_delta" in name:
                torch.nn.init.normal_(param, std=0.5)
    peft_model.save_pretrained(tmp_path / "previous_stage")
    return PeftModel.from_pretrained(load(tiny), tmp_path / "previous_stage", is_trainable=True)


def test_a_lora_stage_is_referenced_to_the_adapter_it_started_from(tiny, tmp_path):
    """The reference of a stage that continues a LoRA adapter is that adapter (TRL's frozen "ref" copy, with the
    trained token rows too), not the base model: before any step, policy and reference agree, the base does not."""
    trainer = softmax_trainer(lora_stage(tiny, tmp_path), AutoTokenizer.from_pretrained(tiny), tmp_path)
    batch = batch_of(trainer)
    with torch.no_grad():
        policy = trainer.completion_logps(trainer.model, batch)
        ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
        with trainer.model.disable_adapter():
            base = trainer.completion_logps(trainer.model, batch)
    torch.testing.assert_close(torch.cat([ref_chosen.unsqueeze(1), ref_rejected], 1), policy)
    assert not torch.allclose(base, policy, atol=1e-3)


def test_a_lora_stages_precomputed_reference_is_the_adapter_it_started_from(tiny, tmp_path):
    """TRL scores the reference inside `DPOTrainer.__init__`: the frozen "ref" adapter has the trained token rows by
    then, so the stored reference log-probabilities of every row equal the policy's before any step."""
    trainer = softmax_trainer(
        lora_stage(tiny, tmp_path), AutoTokenizer.from_pretrained(tiny), tmp_path, precompute_ref_log_probs=True
    )
    batch = batch_of(trainer)
    with torch.no_grad():
        policy = trainer.completion_logps(trainer.model, batch)
        with trainer.model.disable_adapter():
            base = trainer.completion_logps(trainer.model, batch)
    stored = torch.cat([batch["ref_chosen_logps"].unsqueeze(1), batch["ref_rejected_logps"]], 1)
    torch.testing.assert_close(stored, policy)
    assert not torch.allclose(base, policy, atol=1e-3)


def test_the_precomputed_reference_runs_under_the_training_autocast(tiny, tmp_path):
    """With bf16 mixed precision the policy's forward runs under autocast while training; so does the reference
    pass before it, so the stored log-probabilities are the policy's own at step 0 (Eq. 3's ratios start at 0)."""
    trainer = softmax_trainer(
        load(tiny), AutoTokenizer.from_pretrained(tiny), tmp_path, bf16=True, precompute_ref_log_probs=True
    )
    batch = batch_of(trainer)
    with torch.no_grad(), trainer.accelerator.autocast():  # what `Accelerator.prepare` wraps the forward in
        policy = trainer.completion_logps(trainer.model, batch)
    stored = torch.cat([batch["ref_chosen_logps"].unsqueeze(1), batch["ref_rejected_logps"]], 1)
    torch.testing.assert_close(stored, policy, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert not torch.allclose(trainer.completion_logps(trainer.model, batch), policy, atol=1e-4)


def test_precomputed_reference_gives_the_same_loss(tiny, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    live = softmax_trainer(load(tiny), tokenizer, tmp_path / "live")
    stored = softmax_trainer(load(tiny), tokenizer, tmp_path / "stored", precompute_ref_log_probs=True)
    assert "ref_rejected_logps" in stored.train_dataset.column_names
    rows = [stored.train_dataset[i] for i in range(len(ROWS))]
    batch = SoftmaxPreferenceCollator(tokenizer.pad_token_id)(rows)
    with torch.no_grad():
        assert stored.compute_loss(stored.model, batch).item() == pytest.approx(
            live.compute_loss(live.model, {k: v for k, v in batch.items() if not k.startswith("ref_")}).item(),
            rel=1e-5,
        )


def test_short_rows_give_eq3_over_their_own_rejected_items(tiny, tmp_path):
    """Rows with 3, 1 and 2 rejected completions (self-play rows may hold fewer than K): a batch's loss is the mean of
    each row's Eq. 3 over its own items, live or with the reference log-probabilities precomputed in batches of
    other widths."""
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    rows = [*ROWS, {"prompt": "user 7 watched movie 2, then", "chosen": "movie 3", "rejected": ["movie 8", "film 2"]}]
    live = softmax_trainer(load(tiny), tokenizer, tmp_path / "live", rows=rows)
    stored = softmax_trainer(load(tiny), tokenizer, tmp_path / "stored", rows=rows, precompute_ref_log_probs=True)
    for trainer in (live, stored):  # the policy moves away from its reference
        with seeded(0), torch.no_grad():
            for param in trainer.model.parameters():
                param.add_(0.05 * torch.randn_like(param))
    collate = SoftmaxPreferenceCollator(tokenizer.pad_token_id)
    with torch.no_grad():
        alone = [live.compute_loss(live.model, collate([live.train_dataset[i]])).item() for i in range(3)]
        assert len(set(alone)) == 3
        for group in ([0, 1, 2], [1, 2], [2, 1]):
            expected = sum(alone[i] for i in group) / len(group)
            for trainer in (live, stored):
                batch = collate([trainer.train_dataset[i] for i in group])
                assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(expected, rel=1e-5)


def test_packed_mask_lets_each_completion_see_the_prompt_and_itself():
    mask = packed_attention_mask(torch.tensor([[0, 1, 1]]), count=2, width=2)[0, 0]
    # rows: queries, columns: keys; layout [pad, p1, p2 | c0 t0, c0 t1 | c1 t0, c1 t1]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [0, 1, 0, 0, 0, 0, 0],
            [0, 1, 1, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0, 0],
            [0, 1, 1, 1, 1, 0, 0],
            [0, 1, 1, 0, 0, 1, 0],
            [0, 1, 1, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_training_steps_run_with_gradient_checkpointing_and_log_the_rewards(tiny, tmp_path):
    """Two steps under activation checkpointing: every parameter moves, and each step logs finite rewards whose margin
    is the chosen reward minus the mean rejected one; the second step's, measured once the policy moved away from the
    reference, are not 0."""
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    options = {"activation_checkpointing": True, "max_steps": 2, "learning_rate": 1e-3}
    trainer = softmax_trainer(load(tiny), tokenizer, tmp_path, **options)
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.model.is_activation_checkpointing
    after = dict(trainer.model.named_parameters())
    assert [name for name, value in before.items() if torch.equal(value, after[name])] == []
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert [row["step"] for row in logged] == [1, 2]
    for row in logged:
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
            assert key in row and math.isfinite(row[key])
        margin = row["rewards/chosen"] - row["rewards/rejected"]
        assert row["rewards/margins"] == pytest.approx(margin, rel=1e-5, abs=1e-9)
    assert logged[-1]["rewards/chosen"] != 0 and logged[-1]["rewards/rejected"] != 0


def test_sft_weight_adds_the_chosen_completions_negative_log_likelihood(tiny, tmp_path):
    """Eq. 3 plus sft_weight times the mean NLL of the chosen completions, so DPO cannot buy its margin by lowering
    the chosen item's likelihood."""
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    plain = softmax_trainer(load(tiny), tokenizer, tmp_path / "plain")
    guarded = softmax_trainer(load(tiny), tokenizer, tmp_path / "guarded", sft_weight=0.5)
    batch = batch_of(plain)
    with torch.no_grad():
        chosen = plain.completion_logps(plain.model, batch)[:, 0]
        expected = plain.compute_loss(plain.model, batch) - 0.5 * chosen.mean()
        assert guarded.compute_loss(guarded.model, batch).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="sft_weight=-1"):
        config(SoftmaxDPOConfig, tmp_path, sft_weight=-1)


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        ([{"prompt": "p", "chosen": "a", "rejected": ["b", "a"]}], "row 0: the chosen completion is among"),
        ([{"prompt": "p", "chosen": "a", "rejected": []}], "row 0: 'rejected' is empty"),
        ([{"prompt": "p", "chosen": "a", "rejected": "b"}], "row 0: 'rejected' must be a list"),
        ([{"prompt": "p", "chosen": "a"}], r"missing column\(s\) \['rejected'\]"),
    ],
)
def test_bad_rows_are_refused(tiny, tmp_path, rows, pattern):
    with pytest.raises(DataError, match=pattern):
        softmax_trainer(load(tiny), AutoTokenizer.from_pretrained(tiny), tmp_path, rows=rows)


OTHER_LOSSES = {
    "loss_type": ["hinge"],
    "loss_weights": [2.0],
    "label_smoothing": 0.1,
    "f_divergence_type": "forward_kl",
    "f_alpha_divergence_coef": 0.3,
    "ld_alpha": 0.5,
    "use_weighting": True,
    "discopop_tau": 0.1,
    "router_aux_loss_coef": 0.01,
    "label_smoothing_factor": 0.1,
}


@pytest.mark.parametrize(("option", "value"), OTHER_LOSSES.items())
def test_options_of_trls_other_losses_are_refused(tiny, tmp_path, option, value):
    """The loss is Eq. 3, which reads none of them: set, they would be ignored without a word."""
    assert set(OTHER_LOSSES) == set(LOSS_OPTIONS)
    with pytest.raises(ConfigError, match=rf"^{re.escape(f'{option}={value!r}')}: the loss is Eq\. 3.*; leave it at"):
        config(SoftmaxDPOConfig, tmp_path, **{option: value})
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    with pytest.raises(ConfigError, match=rf"^{option}="):  # a plain DPOConfig, before any dataset work
        SoftmaxDPOTrainer(model=load(tiny), args=config(DPOConfig, tmp_path, **{option: value}),
                          train_dataset=Dataset.from_list(ROWS), processing_class=tokenizer)  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value"), [("max_length", 64), ("truncation_mode", "keep_end"), ("padding_free", True)]
)
def test_options_of_trls_collation_are_refused(tmp_path, option, value):
    """The trainer collates its own rows: TRL's truncation and padding options would be ignored without a word."""
    assert set(COLLATION_OPTIONS) == {"max_length", "truncation_mode", "padding_free"}
    with pytest.raises(ConfigError, match=rf"^{option}=.*: the trainer collates whole prompts"):
        config(SoftmaxDPOConfig, tmp_path, **{option: value})


def test_bad_options_are_refused(tiny, tmp_path):
    with pytest.raises(ConfigError, match="shared_prompt_forward='fast': expected one of"):
        config(SoftmaxDPOConfig, tmp_path, shared_prompt_forward="fast")
    trainer = softmax_trainer(
        load(tiny),
        AutoTokenizer.from_pretrained(tiny),
        tmp_path,
        shared_prompt_forward="cache",
        activation_checkpointing=True,
    )
    with pytest.raises(ConfigError, match="gradient checkpointing"):
        trainer.train()


def test_a_sliding_window_model_is_refused_by_the_packed_forward_and_scored_by_the_others(tiny, tmp_path):
    """Transformers applies no sliding window to a custom mask: the packed layout would let every completion see the
    whole prompt. It is refused; the cache and plain forwards give the model's own log-probabilities, window
    included (a window of 4 tokens, shorter than every prompt)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    batch = batch_of(softmax_trainer(load(tiny), tokenizer, tmp_path))
    windowed = AutoConfig.from_pretrained(tiny)
    windowed.use_sliding_window, windowed.sliding_window = True, 4
    windowed.layer_types = ["sliding_attention"] * windowed.num_hidden_layers
    model = AutoModelForCausalLM.from_pretrained(tiny, config=windowed, attn_implementation="sdpa").float()
    with pytest.raises(ConfigError, match="'packed' cannot apply the model's sliding attention window"):
        FORWARDS["packed"](model, batch)
    row = softmax_trainer(load(tiny), tokenizer, tmp_path).train_dataset[0]
    ids = torch.tensor([row["prompt_ids"] + row["chosen_ids"]])
    with torch.no_grad():
        log_softmax = torch.log_softmax(model(ids).logits[0, :-1], -1)
        single = SoftmaxPreferenceCollator(tokenizer.pad_token_id)([row])
        cached, plain = (FORWARDS[name](model, single)[0, 0].item() for name in ("cache", "plain"))
    start = len(row["prompt_ids"])
    expected = log_softmax[torch.arange(start - 1, ids.shape[1] - 1), ids[0, start:]].sum().item()
    assert cached == pytest.approx(expected, abs=1e-4) and plain == pytest.approx(expected, abs=1e-4)
    with torch.no_grad():
        unwindowed = FORWARDS["packed"](load(tiny), single)[0, 0].item()
    assert abs(unwindowed - expected) > 1e-3  # the window changes the scores: what packed would have missed
