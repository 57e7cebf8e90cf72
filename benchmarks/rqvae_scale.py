"""Scale of the RQ-VAE tokenizer, so a user can plan a catalogue of millions:

- encoding throughput (items per second) of a tokenizer with the default sizes on 1M synthetic items in
  batches of 2,048 rows, against batches of 256 and of 65,536 rows (larger batches spill the [batch, codes]
  distance matrices out of cache);
- training time per epoch at 100k items: the RQ losses over every item once in batches of 512, plus the U2I
  loss over 400k synthetic training pairs with the false-negative mask in its sparse (catalogue-scale) form.

    python benchmarks/rqvae_scale.py [--items 1000000] [--train-items 100000] [--train-pairs 400000]
"""

from __future__ import annotations

import argparse
import time

import torch

from align3gr.console import format_table
from align3gr.tokenize.losses.u2i import InteractionSet, false_negative_mask, u2i_loss
from align3gr.tokenize.rqvae import RQVAE

FEATURES = 384 + 64  # MiniLM semantic + collaborative features


def synthetic(rows: int, generator: torch.Generator) -> torch.Tensor:
    centres = torch.randn(512, FEATURES, generator=generator)
    return centres[torch.randint(512, (rows,), generator=generator)] + 0.3 * torch.randn(
        rows, FEATURES, generator=generator
    )


def encoding_rate(model: RQVAE, features: torch.Tensor, batch: int) -> float:
    start = time.perf_counter()
    model.encode(features, batch_size=batch)
    return len(features) / (time.perf_counter() - start)


def training_epoch(items: int, pairs: int, generator: torch.Generator) -> tuple[float, float]:
    """Seconds of one epoch of RQ training over `items` items, and of one U2I epoch over `pairs` pairs."""
    item_model = RQVAE(FEATURES, [256, 128])
    user_model = RQVAE(FEATURES, [256, 128])
    features = synthetic(items, generator)
    users = features[: items // 2]
    item_model.quantizer.init_codebooks(item_model.encoder(features[:20000]).detach(), generator)
    optimizer = torch.optim.AdamW([*item_model.parameters(), *user_model.parameters()], lr=1e-3)
    start = time.perf_counter()
    for rows in torch.randperm(items, generator=generator).split(512):
        optimizer.zero_grad()
        item_model(features[rows]).loss.backward()
        optimizer.step()
    rq_seconds = time.perf_counter() - start
    pair_users = torch.randint(len(users), (pairs,), generator=generator)
    pair_items = torch.randint(items, (pairs,), generator=generator)
    known = InteractionSet(pair_users, pair_items, items, dense_limit=0)
    start = time.perf_counter()
    for rows in torch.randperm(pairs, generator=generator).split(2048):
        optimizer.zero_grad()
        u = user_model.encoder(users[pair_users[rows]])
        v = item_model.encoder(features[pair_items[rows]])
        u2i_loss(u, v, false_negative_mask(pair_users[rows], pair_items[rows], known)).backward()
        optimizer.step()
    return rq_seconds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--train-items", type=int, default=100_000)
    parser.add_argument("--train-pairs", type=int, default=400_000)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = RQVAE(FEATURES, [256, 128]).eval()
    features = synthetic(args.items, generator)
    model.quantizer.init_codebooks(model.encoder(features[:20000]).detach(), generator)
    rates = {batch: encoding_rate(model, features, batch) for batch in (2048, 256, 65536)}
    rq_seconds, u2i_seconds = training_epoch(args.train_items, args.train_pairs, generator)
    print(format_table([
        *({"measurement": f"encode {args.items:,} items, batches of {batch:,}", "value": round(rate), "unit": "items/s"}
          for batch, rate in rates.items()),
        {"measurement": f"RQ epoch over {args.train_items:,} items", "value": round(rq_seconds, 1), "unit": "s"},
        {"measurement": f"U2I epoch over {args.train_pairs:,} pairs", "value": round(u2i_seconds, 1), "unit": "s"},
    ], "RQ-VAE tokenizer scale (3 levels x 256 codes x 32, CPU)"))  # fmt: skip
    default = rates[2048]
    print(f"\n2,048-row batches vs 256-row batches: x{default / rates[256]:.2f} throughput, "
          f"vs 65,536-row batches: x{default / rates[65536]:.2f}")  # fmt: skip
    print(f"{args.items:,} items encode in {args.items / default:.1f}s")


if __name__ == "__main__":
    main()
