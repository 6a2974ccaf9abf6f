"""The records stages hand to each other: the Arrow schema of every table, the per-query records,
and the names of methods, stages and steps."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

import pyarrow as pa

from rsloc_assets.grids import TILE_PX, TileGrid, get_grid


class Method(StrEnum):
    """How a query's estimate was obtained."""

    RETRIEVAL_VOTE = "retrieval-vote"
    CLIQUE = "clique"
    VERIFIED = "verified"
    NOT_LOCALIZED = "not-localized"


class Stage(StrEnum):
    """The estimate each stage leaves: the retrieval vote, + cliques, + verification."""

    RETRIEVAL = "retrieval"
    CLIQUES = "cliques"
    VERIFIED = "verified"


class Step(StrEnum):
    """The timed per-query steps, in order."""

    PATCHES = "patches"
    CANDIDATES = "candidates"
    CLIQUES = "cliques"
    VERIFY = "verify"


_TILE_FIELDS = [
    ("key", pa.string()),
    ("level", pa.int32()),
    ("col", pa.int64()),
    ("row", pa.int64()),
    ("time", pa.string()),
    ("lon", pa.float64()),
    ("lat", pa.float64()),
    ("west", pa.float64()),
    ("south", pa.float64()),
    ("east", pa.float64()),
    ("north", pa.float64()),
]

# One row per gallery tile at the working level: its grid address, chosen time, centre, bounds.
MANIFEST_SCHEMA = pa.schema(_TILE_FIELDS)

# One row per query patch: its window, centre in query pixels, and centre offset from the image
# centre in ground metres along the image's x and up axes (east and north when it is north-up).
# The patches parquet adds `view_valid` (the valid share of the patch's view at the query's
# heading, `PatchMeta.heading_deg`) and `vector` (that view's embedding, a fixed-size list).
PATCH_SCHEMA = pa.schema(
    [
        ("patch", pa.int32()),
        ("x0", pa.int32()),
        ("y0", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("cx", pa.float64()),
        ("cy", pa.float64()),
        ("east_m", pa.float64()),
        ("north_m", pa.float64()),
        ("valid_fraction", pa.float32()),
    ]
)

# One row per (query vector, retrieved tile) of one batched store search: `patch` is the vector's
# row, rank 0 its most similar tile.
SEARCH_SCHEMA = pa.schema(
    [
        ("patch", pa.int32()),
        ("rank", pa.int32()),
        ("key", pa.string()),
        ("level", pa.int32()),
        ("col", pa.int64()),
        ("row", pa.int64()),
        ("lon", pa.float64()),
        ("lat", pa.float64()),
        ("score", pa.float32()),
    ]
)

# One row per (patch, retrieved tile): the tile's score against the patch's view at the query's
# voted heading, and that heading (degrees counter-clockwise the patch was turned to be
# north-up); rank 0 is the patch's most similar tile.
CANDIDATE_SCHEMA = SEARCH_SCHEMA.append(pa.field("heading_deg", pa.float32()))

# The candidates that entered the clique graph, with their best group's score and id (-1: none).
NODE_SCHEMA = CANDIDATE_SCHEMA.append(pa.field("clique_score", pa.int32())).append(
    pa.field("group", pa.int32())
)

# One row per (location hypothesis, patch): the tile under the patch's centre where the hypothesis
# puts it, and the candidate that supports the hypothesis there (null key, rank -1: none).
HYPOTHESIS_SCHEMA = pa.schema(
    [
        ("hypothesis", pa.int32()),
        ("patch", pa.int32()),
        ("key", pa.string()),
        ("lon", pa.float64()),
        ("lat", pa.float64()),
        ("hit_key", pa.string()),
        ("hit_rank", pa.int32()),
        ("hit_score", pa.float32()),
    ]
)

# One row per (patch, candidate) pair that verification tried.
MATCH_SCHEMA = pa.schema(
    [
        ("hypothesis", pa.int32()),
        ("patch", pa.int32()),
        ("key", pa.string()),
        ("hit_rank", pa.int32()),
        ("accepted", pa.bool_()),
        ("reason", pa.string()),
        ("keypoints", pa.int32()),
        ("matches", pa.int32()),
        ("mac_size", pa.int32()),
        ("inliers", pa.int32()),
        ("similarity", pa.float32()),
        ("seconds", pa.float32()),
    ]
)


# An embedded tile's digest of the times of the 3×3 tiles its mosaic showed (null in tables
# written before it was kept: those tiles are embedded again).
MOSAIC = "mosaic"


def tile_schema(dim: int) -> pa.Schema:
    """Arrow schema of one embedded gallery tile: the manifest's columns, its mosaic key and its
    `dim`-d vector."""
    return pa.schema(
        [*_TILE_FIELDS, (MOSAIC, pa.string()), ("vector", pa.list_(pa.float32(), dim))]
    )


@dataclass(frozen=True)
class GalleryInfo:
    """What queries need to know of the gallery: grid, level, latitude and a tile's ground size."""

    grid: TileGrid
    zoom: int
    ref_lat: float
    tile_ground_m: tuple[float, float]
    tiles: int

    @property
    def pixel_m(self) -> float:
        """The level's ground metres per tile pixel, √(x·y)."""
        return (self.tile_ground_m[0] * self.tile_ground_m[1]) ** 0.5 / TILE_PX

    def to_dict(self) -> dict:
        return {
            "grid": self.grid.name,
            "zoom": self.zoom,
            "ref_lat": self.ref_lat,
            "tile_ground_m": list(self.tile_ground_m),
            "tiles": self.tiles,
        }

    @classmethod
    def from_dict(cls, d: dict) -> GalleryInfo:
        return cls(
            get_grid(d["grid"]), d["zoom"], d["ref_lat"], tuple(d["tile_ground_m"]), d["tiles"]
        )


@dataclass(frozen=True)
class HeadingVote:
    """How a query's heading was chosen among the tried ones: the winner's index, each heading's
    mean best-tile score over the voting patches, and which patches (table rows) voted; index 0
    and nothing else when one heading was tried."""

    index: int = 0
    scores: tuple[float, ...] = ()
    sample: tuple[int, ...] = ()


@dataclass(frozen=True)
class PatchMeta:
    """A query as its patch table records it: size, ground resolution, why it has no patches (if
    so), the gallery it was cut for, the step's seconds, the headings (degrees) tried, and the
    vote that chose the one its patches were embedded at."""

    query: str
    width: int
    height: int
    gsd_m: tuple[float, float]
    reason: str
    gallery: GalleryInfo
    seconds: float
    headings: tuple[float, ...] = (0.0,)
    vote: HeadingVote = HeadingVote()

    @property
    def heading_deg(self) -> float:
        """The query's heading: its patches' views are turned this far from north-up."""
        return self.headings[self.vote.index]

    @property
    def image_ground_m(self) -> tuple[float, float]:
        """The query's width and height on the ground in metres."""
        return self.width * self.gsd_m[0], self.height * self.gsd_m[1]

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "width": self.width,
            "height": self.height,
            "gsd_m": list(self.gsd_m),
            "reason": self.reason,
            "gallery": self.gallery.to_dict(),
            "seconds": self.seconds,
            "headings": list(self.headings),
            "vote": asdict(self.vote),
        }

    @classmethod
    def from_dict(cls, d: dict) -> PatchMeta:
        return cls(
            d["query"],
            d["width"],
            d["height"],
            tuple(d["gsd_m"]),
            d["reason"],
            GalleryInfo.from_dict(d["gallery"]),
            d["seconds"],
            tuple(d.get("headings", [0.0])),  # tables written before headings were north-up
            _vote(d.get("vote")),
        )


def _vote(d: dict | None) -> HeadingVote:
    """A `HeadingVote` from its dict (None, from before the vote moved to the patches: none)."""
    if d is None:
        return HeadingVote()
    return HeadingVote(d["index"], tuple(d["scores"]), tuple(d["sample"]))


@dataclass(frozen=True)
class CliqueSummary:
    """What the clique stage found for one query."""

    k: int
    nodes: int
    edges: int
    maximal: int
    kept: int
    groups: int
    best_group_score: int
    hypotheses: int
    best_support: int
    truncated: bool
    ms: float


@dataclass(frozen=True)
class Hypothesis:
    """One place stage 2 proposes for a query: the image centre and heading of a rigid fit of
    patch offsets to candidate tiles, seeded by a clique (or the vote); its supporting patches
    and their evidence (summed similarity above each patch's median candidate)."""

    rank: int
    source: Method
    centre_lon: float
    centre_lat: float
    rotation_deg: float
    support: int
    evidence: float
    residual_m: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Hypothesis:
        return cls(**{**d, "source": Method(d["source"])})


@dataclass
class Localization:
    """Where a query is estimated to be, how it was found and how sure we are."""

    query: str
    method: Method
    centre_lon: float | None = None
    centre_lat: float | None = None
    corners_lonlat: list[tuple[float, float]] = field(default_factory=list)
    confidence: float = 0.0
    support: int = 0
    patches: int = 0
    error_m: float | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Localization:
        return cls(
            **{
                **d,
                "method": Method(d["method"]),
                "corners_lonlat": [tuple(c) for c in d["corners_lonlat"]],
            }
        )


@dataclass(frozen=True)
class Verification:
    """Stage 3's record of one query: the final estimate, the footprint's figures when one was
    fitted, patches tried and accepted, and seconds."""

    estimate: Localization
    footprint: dict | None
    patches_tried: int
    patches_accepted: int
    seconds: float
    hypothesis: int | None = None
    hypotheses_tried: list[dict] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.footprint is not None

    def to_dict(self) -> dict:
        return {
            "estimate": self.estimate.to_dict(),
            "verified": self.verified,
            "footprint": self.footprint,
            "patches_tried": self.patches_tried,
            "patches_accepted": self.patches_accepted,
            "seconds": self.seconds,
            "hypothesis": self.hypothesis,
            "hypotheses_tried": self.hypotheses_tried,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Verification:
        return cls(
            Localization.from_dict(d["estimate"]),
            d["footprint"],
            d["patches_tried"],
            d["patches_accepted"],
            d["seconds"],
            d.get("hypothesis"),
            d.get("hypotheses_tried", []),
        )


def key_times(table: pa.Table) -> dict[str, str]:
    """Tile key → imagery time of a table with `key` and `time` columns (a manifest, a store)."""
    return dict(zip(table["key"].to_pylist(), table["time"].to_pylist(), strict=True))
