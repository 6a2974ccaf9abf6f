"""A query's heading, voted by a sample of its patches: each is embedded at every tried heading
and matched to its best gallery tile, and the heading they match best on average wins. A whole
image has one heading, so the other patches are then embedded at the winner's alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rsloc_assets.records import HeadingVote
from rsloc_assets.retrieval.store import TileStore

# IVF partitions the vote's top-1 search probes: each view's best tile is nearly always in its
# nearest partition. bench-query, 320 views at 824,796 × 1,280-d (IVF-FLAT, 908 partitions):
# 0.29 s at 1, 5.1 s at the 20 the candidate search probes; same candidates.
VOTE_NPROBES = 1
# Patches the vote starts with and adds while the winner leads the runner-up by less than
# VOTE_MARGIN (mean best-tile cosine, default descriptor). bench-real seed 1 (not the reported
# seed 0), 42 queries turned to random headings, agreement with the vote of all their patches
# (views embedded a query; all patches at 8 headings: 239): 8 patches alone 36 (86), 16 alone
# 40 (138), 8 at a time to a lead of 0.005 39 (104), of 0.01 40 (126), 16 at a time to 0.01 42
# (164).
VOTE_PATCHES, VOTE_MARGIN = 8, 0.01
# Patches at least this valid are whole for the vote's order (a turned query's are mostly not).
WHOLE = 0.99

# Embeds the patches of the given table rows at every tried heading: (rows × headings × dim
# vectors, rows × headings valid shares).
ViewEmbedder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class VotedViews:
    """The vote and the views it embedded: `vote.sample`'s rows × headings vectors and valid
    shares, whose winning heading's column the patch table keeps."""

    vote: HeadingVote
    vectors: np.ndarray
    valid: np.ndarray


def vote_order(valid_fraction: np.ndarray) -> np.ndarray:
    """Patch rows in the order they join the vote: whole patches first, in an order whose every
    prefix spreads over the image (bit-reversed positions in the row-major grid: first, middle,
    quarters, …), then the rest from the most valid down."""
    whole = np.flatnonzero(valid_fraction >= WHOLE)
    bits = max(1, int(len(whole) - 1).bit_length())
    spread = [r for i in range(1 << bits) if (r := int(f"{i:0{bits}b}"[::-1], 2)) < len(whole)]
    rest = np.flatnonzero(valid_fraction < WHOLE)
    rest = rest[np.argsort(-valid_fraction[rest], kind="stable")]
    return np.concatenate([whole[spread], rest]).astype(np.int64)


def best_scores(
    store: TileStore, vectors: np.ndarray, valid: np.ndarray, min_valid: float
) -> np.ndarray:
    """Patches × headings: each view's best-tile cosine (one top-1 search of the views at least
    `min_valid` valid); 0 for a view not searched."""
    patches, headings, dim = vectors.shape
    views = np.flatnonzero(valid.ravel() >= min_valid)
    score = np.zeros((patches, headings))
    if len(views):
        best = store.search(vectors.reshape(-1, dim)[views], 1, nprobes=VOTE_NPROBES)
        patch, turn = np.divmod(views[best["patch"].to_numpy()], headings)
        np.maximum.at(score, (patch, turn), best["score"].to_numpy())
    return score


def vote_heading(
    store: TileStore,
    order: np.ndarray,
    embed: ViewEmbedder,
    min_valid: float,
    step: int = VOTE_PATCHES,
    margin: float = VOTE_MARGIN,
) -> VotedViews:
    """The heading whose views match best on average over the voting patches: `step` patches of
    `order` at a time are embedded at every heading (`embed`) and matched to their best tiles,
    until the winner leads by `margin` or every patch has voted.

    Letting each patch take its best heading per tile lets turned look-alikes in. Patch
    recall@1/@10 of the true tile, grid descriptor, 8 headings, on the demo's 8 north-up
    queries: 0.68/0.93 at heading 0 alone, 0.43/0.72 with each tile's best heading, 0.54/0.84
    keeping the winner's two neighbours too, 0.68/0.93 with the winner alone (0° for all 8);
    on 3 turned queries (37°, 90°, 180°) the winner alone gave 0.67/0.96."""
    if step < 1 or not len(order):
        raise ValueError(f"the heading vote needs patches, {step} at a time; got {len(order)}")
    vectors, valid, scores = [], [], []
    for first in range(0, len(order), step):
        v, s = embed(order[first : first + step])
        vectors.append(v)
        valid.append(s)
        scores.append(best_scores(store, v, s, min_valid))
        means = np.concatenate(scores).mean(axis=0)
        ranked = np.sort(means)
        if len(ranked) < 2 or ranked[-1] - ranked[-2] >= margin:
            break
    voted = order[: sum(len(v) for v in vectors)]
    vote = HeadingVote(
        int(np.argmax(means)), tuple(float(m) for m in means), tuple(int(r) for r in voted)
    )
    return VotedViews(vote, np.concatenate(vectors), np.concatenate(valid))
