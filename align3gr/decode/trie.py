"""The SCID trie: the item code table compiled into tensors, so constrained decoding masks whole batches at once.

Every item is a path of L tokens (one per code level) from the root to a leaf. Nodes are numbered per depth;
the children of a node are contiguous and sorted by code (a CSR layout), so for a batch of beams

- the allowed next tokens are a gather of `[beams, max_children]` token IDs (`children`), and
- the child reached by a token is one `searchsorted` of `parent * codes + code` keys (`step`).

Leaves are numbered in SCID order, so the leaves under any node form a contiguous range. Excluding items (a user's
history) is then exact and cheap: each prompt has a sorted tensor of banned leaf indices, and a child is allowed
only while its range holds more leaves than banned ones (two `searchsorted` calls), so a beam never enters a
subtree made only of excluded items.

Memory is O(number of trie nodes + L * vocabulary), never O(nodes * vocabulary): it scales to millions of items.
Distinct leaves are distinct items, so decoding along the trie never returns an invalid or duplicate item.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch

from align3gr.errors import DataError

DEAD = -1
"""Node index of a beam that left the trie (only padding beams whose score is already -inf can)."""


@dataclass(frozen=True)
class Level:
    """Transitions from the nodes at depth d to those at depth d + 1."""

    offsets: torch.Tensor
    """`[nodes_d + 1]`: children of node n are the depth-(d+1) nodes `offsets[n] .. offsets[n + 1] - 1`."""
    child_tokens: torch.Tensor
    """`[nodes_{d+1}]`: vocabulary ID of the token leading to each depth-(d+1) node."""
    keys: torch.Tensor
    """`[nodes_{d+1}]`: `parent * num_codes + code`, ascending: `searchsorted` maps (node, token) to the child."""
    code_of_token: torch.Tensor
    """`[vocab]`: local code index of each vocabulary token at this level, -1 for tokens not used here."""
    child_leaves: torch.Tensor
    """`[nodes_{d+1} + 1]`: the leaves under depth-(d+1) node m are `child_leaves[m] .. child_leaves[m + 1] - 1`."""
    num_codes: int
    max_children: int


class SCIDTrie:
    """Compiled prefix tree of the item SCIDs; built with `SCIDTrie.build(item_codes, token_ids)`."""

    def __init__(self, levels: list[Level], leaf_items: list[str], vocab_size: int):
        self.levels = levels
        self.leaf_items = leaf_items
        self.vocab_size = vocab_size
        self.leaf_of = {item: leaf for leaf, item in enumerate(leaf_items)}

    @property
    def depth(self) -> int:
        """L: the number of tokens of every SCID."""
        return len(self.levels)

    def __len__(self) -> int:
        return len(self.leaf_items)

    @classmethod
    def build(cls, item_codes: Mapping[str, Sequence[str]], token_ids: Mapping[str, int], vocab_size: int) -> SCIDTrie:
        """Compile `{item_id: [code tokens]}` given the tokenizer's `{token: id}`; errors name the item or token."""
        if not item_codes:
            raise DataError("the item code table is empty")
        rows: list[tuple[tuple[int, ...], str]] = []
        depth = len(next(iter(item_codes.values())))
        for item, codes in item_codes.items():
            if len(codes) != depth:
                raise DataError(f"item '{item}' has {len(codes)} codes; the others have {depth}")
            missing = [c for c in codes if c not in token_ids]
            if missing:
                raise DataError(
                    f"code token {missing[0]!r} of item '{item}' is not in the tokenizer's vocabulary: "
                    "was the model trained with these code tables?"
                )
            rows.append((tuple(token_ids[c] for c in codes), item))
        if depth == 0:
            raise DataError("item codes are empty lists; expected at least one code token per item")
        rows.sort()
        for (a, item_a), (b, item_b) in zip(rows, rows[1:], strict=False):
            if a == b:
                raise DataError(f"items '{item_a}' and '{item_b}' share the same SCID; item codes must be unique")
        paths = torch.tensor([r[0] for r in rows], dtype=torch.long)
        levels = [_compile_level(paths, d, vocab_size) for d in range(depth)]
        return cls(levels, [r[1] for r in rows], vocab_size)

    def children(
        self, nodes: torch.Tensor, depth: int, banned: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For beams at `nodes` (depth `depth`): `(tokens, child_nodes, valid)`, each `[beams, max_children]`.

        With `banned` (`[beams, M]` sorted leaf indices per beam, from `banned_leaves`), a child whose leaves are
        all banned is not valid. Beams at DEAD get no children; a live beam without children is impossible by
        construction and raises."""
        if not 0 <= depth < self.depth:
            raise RuntimeError(f"no SCID token follows depth {depth}: every SCID has exactly {self.depth} tokens")
        level = self.levels[depth]
        live = nodes != DEAD
        safe = nodes.clamp(min=0)
        start = level.offsets[safe]
        count = torch.where(live, level.offsets[safe + 1] - start, 0)
        if bool(((count == 0) & live).any()):
            raise RuntimeError(f"a beam at depth {depth} has no allowed next token: the SCID trie is corrupt")
        rank = torch.arange(level.max_children, device=nodes.device)
        valid = rank < count[:, None]
        child = torch.where(valid, start[:, None] + rank, 0)
        if banned is not None:
            first, end = level.child_leaves[child], level.child_leaves[child + 1]
            valid &= end - first > torch.searchsorted(banned, end) - torch.searchsorted(banned, first)
        return level.child_tokens[child], torch.where(valid, child, DEAD), valid

    def banned_leaves(self, exclusions: Sequence[Collection[str]]) -> torch.Tensor:
        """`[len(exclusions), M]`: each row's items as sorted leaf indices (items outside the trie ignored), padded
        with `len(self)`, past every leaf; on the trie's device, for `children(..., banned=...)`."""
        rows = [sorted({self.leaf_of[i] for i in items if i in self.leaf_of}) for items in exclusions]
        out = torch.full((len(rows), max([1, *map(len, rows)])), len(self), dtype=torch.long)
        for row, leaves in enumerate(rows):
            out[row, : len(leaves)] = torch.tensor(leaves, dtype=torch.long)
        return out.to(self.levels[0].offsets.device)

    def allowed_mask(self, nodes: torch.Tensor, depth: int, banned: torch.Tensor | None = None) -> torch.Tensor:
        """`[beams, vocab]` boolean mask of the tokens allowed after `nodes` (`banned` as in `children`)."""
        tokens, _, valid = self.children(nodes, depth, banned)
        mask = torch.zeros(len(nodes), self.vocab_size + 1, dtype=torch.bool, device=nodes.device)
        mask.scatter_(1, torch.where(valid, tokens, self.vocab_size), True)
        return mask[:, : self.vocab_size]

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor, depth: int) -> torch.Tensor:
        """The depth-(d+1) node reached from `nodes` by `tokens`, or DEAD when the token is not a child."""
        level = self.levels[depth]
        code = level.code_of_token[tokens]
        key = nodes * level.num_codes + code
        position = torch.searchsorted(level.keys, key).clamp(max=len(level.keys) - 1)
        found = (nodes != DEAD) & (code >= 0) & (level.keys[position] == key)
        return torch.where(found, position, DEAD)

    def walk(self, suffixes: torch.Tensor) -> torch.Tensor:
        """Node reached by each row of `suffixes` (`[beams, t]` generated tokens, t <= L) from the root."""
        nodes = torch.zeros(len(suffixes), dtype=torch.long, device=suffixes.device)
        for depth in range(suffixes.shape[1]):
            nodes = self.step(nodes, suffixes[:, depth], depth)
        return nodes

    def items_of(self, leaves: torch.Tensor) -> list[str | None]:
        """Item ID of each leaf node (depth L), None for DEAD."""
        return [None if n == DEAD else self.leaf_items[n] for n in leaves.tolist()]

    def to(self, device: torch.device | str) -> SCIDTrie:
        """The same trie with its tensors on `device`."""
        levels = [
            dataclasses.replace(lv, **{k: v.to(device) for k, v in vars(lv).items() if isinstance(v, torch.Tensor)})
            for lv in self.levels
        ]
        return SCIDTrie(levels, self.leaf_items, self.vocab_size)


def _compile_level(paths: torch.Tensor, depth: int, vocab_size: int) -> Level:
    """Transitions depth -> depth + 1 of the sorted, unique `paths` (`[items, L]` token IDs)."""
    parents = _node_ids(paths, depth)
    children = _node_ids(paths, depth + 1)
    first = torch.ones(len(paths), dtype=torch.bool)
    first[1:] = children[1:] != children[:-1]
    child_parent = parents[first]
    child_tokens = paths[first, depth]
    vocabulary = torch.unique(child_tokens)
    if int(vocabulary.max()) >= vocab_size:
        raise DataError(f"code token ID {int(vocabulary.max())} is outside the model's vocabulary of {vocab_size}")
    code_of_token = torch.full((vocab_size,), -1, dtype=torch.long)
    code_of_token[vocabulary] = torch.arange(len(vocabulary))
    num_parents = int(parents.max()) + 1
    counts = torch.bincount(child_parent, minlength=num_parents)
    offsets = torch.zeros(num_parents + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(counts, 0)
    keys = child_parent * len(vocabulary) + code_of_token[child_tokens]
    child_leaves = torch.cat([first.nonzero().flatten(), torch.tensor([len(paths)])])
    return Level(offsets, child_tokens, keys, code_of_token, child_leaves, len(vocabulary), int(counts.max()))


def _node_ids(paths: torch.Tensor, depth: int) -> torch.Tensor:
    """Index of each path's depth-`depth` prefix among the distinct prefixes of that length (paths are sorted)."""
    if depth == 0:
        return torch.zeros(len(paths), dtype=torch.long)
    prefix = paths[:, :depth]
    new = torch.ones(len(paths), dtype=torch.bool)
    new[1:] = (prefix[1:] != prefix[:-1]).any(dim=1)
    return torch.cumsum(new.long(), 0) - 1


def trie_for_model(item_codes: Mapping[str, Sequence[str]], tokenizer, model) -> SCIDTrie:
    """The trie of `item_codes` in the token IDs of `tokenizer`, sized to `model`'s output vocabulary."""
    vocabulary = tokenizer.get_vocab()
    missing = sorted({c for codes in item_codes.values() for c in codes} - set(vocabulary))
    if missing:
        raise DataError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} lacks {len(missing)} code tokens of the item "
            f"code table (first: {missing[0]!r}): was the model trained with these code tables?"
        )
    return SCIDTrie.build(item_codes, vocabulary, model.get_output_embeddings().weight.shape[0])
