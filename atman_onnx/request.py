"""One explanation request: everything ``Explainer.explain`` takes, declared and validated once, here.

The same object comes from the Python API (``Explainer.explain(prompt, target, **options)``), the command line's
flags, and a JSON body (``ExplainRequest.from_dict``), so all three accept and refuse exactly the same things. Each
field is declared once, with ``spec``: its type, default, bounds or choices and one-line doc. The checks, the CLI's
flags (atman_onnx/cli.py), the service's JSON Schema (serve/schema.py) and docs/reference/request.md
(tools/reference.py) are all derived from ``FIELDS``, so adding a field is one declaration here plus its engine code.
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass
from typing import Any

from atman_onnx.core.errors import InputError
from atman_onnx.request_images import decode_images, image_bytes
from atman_onnx.request_kinds import REQUEST_KINDS, Messages
from atman_onnx.runtime.factors import DEFAULT_FACTOR
from atman_onnx.runtime.groups import GRANULARITIES, TARGET_GRANULARITIES
from atman_onnx.runtime.plan import SCHEDULES
from atman_onnx.spec import declared, spec

IMAGE_UNITS = ("region", "tile", "token")
GROUP_LEVELS = ("auto", "off")
DEFAULT_TOP_K = 3  # chosen on tools/eval's long-context set (docs/lab/levels.md)
_RANK = {"document": 5, "spans": 4, "paragraph": 3, "sentence": 2, "word": 1, "token": 0}  # coarse to fine
MAX_GRID = 64
MAX_FACTOR = 1e6  # far past any use, and far inside float32: the scaled attention overflows near 1e37


@dataclass(frozen=True)
class ExplainRequest:
    """What to explain and how; every field has a default but ``prompt``."""

    prompt: str | Messages = spec(  # noqa: RUF009 (spec returns a dataclasses.field)
        "the text to explain, or chat messages [{role, content}] rendered with the model's chat template (then only "
        "the messages' contents are explained unless include_template); on the command line, the text"
    )
    target: str | None = spec("the completion to explain; unset: the model's greedy completion", default=None)
    factor: float = spec(
        f"suppression factor s (default {DEFAULT_FACTOR:g}: in log_additive mode the unit is taken out of "
        "attention; below 1 suppresses, above 1 amplifies)",
        default=DEFAULT_FACTOR,
        ge=0,
        le=MAX_FACTOR,
        label="suppression factor",
    )
    conceptual: float | None = spec(
        "cosine threshold for conceptual suppression (0.7 is a fair choice); unset: off",
        default=None,
        gt=0,
        le=1,
        label="conceptual threshold",
    )
    granularity: str | tuple[str, ...] = spec(
        f"unit suppressed in one pass and reported as one row ({', '.join(GRANULARITIES)}), or levels of them, "
        "coarse to fine, each nesting in the one before (a list; on the command line comma-separated, e.g. "
        "paragraph,sentence): the first level scores all its units, each later one the sub-units of the units the "
        "refinement rule selects (every score exact)",
        default="token",
    )
    refine_top_k: int = spec(
        "with levels: refine the k most relevant units of each level (of positive relevance); with "
        "target_granularity sentence, the k of each answer sentence",
        default=DEFAULT_TOP_K,
        ge=1,
    )
    refine_mass: float | None = spec(
        "with levels: refine fewer than refine_top_k units when the most relevant ones already hold this share of "
        "the level's positive relevance; unset: always refine_top_k",
        default=None,
        gt=0,
        le=1,
        label="refinement mass",
    )
    max_passes: int | None = spec(
        "with levels: at most this many passes over all levels (the first level must fit); unset: no cap",
        default=None,
        ge=2,
    )
    group_level: str = spec(
        "with levels: auto puts a level of contiguous groups of the first level's units above it when that saves "
        "passes; off never does",
        default="auto",
        choices=GROUP_LEVELS,
    )
    spans: tuple[tuple[int, int], ...] | None = spec(
        "with granularity 'spans': character ranges [start, end) of the prompt", default=None, flag="--span"
    )
    delimiter: str | None = spec("with granularity 'spans': split the prompt into spans at this string", default=None)
    documents: tuple[str | dict[str, str], ...] | None = spec(
        "texts (or {title, text} objects) to answer from, put before the prompt (the question): through the chat "
        "template's documents where it takes them, else as 'Document 1: title' blocks; only their text is explained, "
        "and granularity 'document' makes each one unit; on the command line, a text file per flag",
        default=None,
        flag="--document",
    )
    include_template: bool = spec(
        "explain the chat template's tokens too; with documents, the question and the headings as well", default=False
    )
    contrast: str | None = spec(
        "explain why the model says target rather than this completion (one column of relevance)", default=None
    )
    target_granularity: str = spec(
        "columns of relevance: one per target token, one per sentence of the target (each answer sentence's "
        "sources), or one for the complete target; summed log-probs, so no extra passes",
        default="token",
        choices=TARGET_GRANULARITIES,
        label="target granularity",
    )
    max_new_tokens: int = spec("length limit of the generated target when target is null", default=32, ge=1)
    batch_size: int | None = spec(
        "perturbations per graph call; unset: as many as fit the explainer's memory budget", default=None, ge=1
    )
    chunk_size: int | None = spec(
        "queries per graph call of a long suffix, each chunk attending to the keys before it (exact; memory of the "
        "attention scores grows with chunk x length, not length x length); unset: from the memory budget",
        default=None,
        ge=1,
    )
    schedule: str = spec(
        "prefix (reuse the unperturbed prefix's keys and values) or naive (full-length passes)",
        default="prefix",
        choices=SCHEDULES,
    )
    images: tuple[bytes, ...] = spec(
        "images for an image-text model, one per <image> marker of the prompt, in order: in JSON, base64 strings of "
        "the image files; in Python, file paths, bytes or PIL images; on the command line, a file path per flag",
        default=(),
        flag="--image",
    )
    image_units: str = spec(
        "image unit suppressed in one pass: region (a grid over each image), tile, or token",
        default="region",
        choices=IMAGE_UNITS,
        label="image unit",
    )
    grid: int = spec("with image_units 'region': regions per image side", default=4, ge=1, le=MAX_GRID)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", image_bytes(self.images))
        object.__setattr__(self, "granularity", _levels(self.granularity))
        for name, check in _CHECKS:
            check(getattr(self, name))
        if self.documents is not None:
            object.__setattr__(self, "documents", tuple(self.documents))
        if self.spans is not None:
            object.__setattr__(self, "spans", tuple((int(a), int(b)) for a, b in self.spans))
        _check_together(self)

    @property
    def levels(self) -> tuple[str, ...]:
        """The granularity as levels, coarse to fine: one for a flat explanation."""
        return (self.granularity,) if isinstance(self.granularity, str) else self.granularity

    @property
    def document_texts(self) -> tuple[tuple[str, str], ...] | None:
        """The documents as (title, text), the title empty where none was given."""
        if self.documents is None:
            return None
        return tuple(("", d) if isinstance(d, str) else (d.get("title", ""), d["text"]) for d in self.documents)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplainRequest:
        """A request from a JSON object (or keyword arguments); an unknown or mistyped field is named."""
        if not isinstance(data, dict):
            raise InputError(f"a request is a JSON object, got {type(data).__name__}")
        if not FIELDS.keys() >= data.keys():
            unknown = sorted(data.keys() - FIELDS.keys())
            raise InputError(f"unknown field {unknown[0]!r}; fields: {', '.join(FIELDS)}")
        if "prompt" not in data:
            raise InputError("field 'prompt' is required")
        if "images" in data:
            data = {**data, "images": decode_images(data["images"])}
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``from_dict`` reads back."""
        data = {name: getattr(self, name) for name in FIELDS}
        if isinstance(self.prompt, list):
            data["prompt"] = [dict(m) for m in self.prompt]
        if self.spans is not None:
            data["spans"] = [list(s) for s in self.spans]
        if not isinstance(self.granularity, str):
            data["granularity"] = list(self.granularity)
        if self.documents is not None:
            data["documents"] = [d if isinstance(d, str) else dict(d) for d in self.documents]
        data["images"] = [base64.b64encode(image).decode("ascii") for image in self.images]
        return data


def _levels(value: Any) -> str | tuple[str, ...]:
    """The granularity in its one form: a name, or a tuple of two or more (a comma-separated string split)."""
    if isinstance(value, str):
        value = value.split(",") if "," in value else value
    if isinstance(value, str) or not isinstance(value, (list, tuple)):  # a name, or a wrong type for the check
        return value
    names = tuple(v.strip() if isinstance(v, str) else v for v in value)
    return names[0] if len(names) == 1 else names


FIELDS = declared(ExplainRequest, REQUEST_KINDS)
_CHECKS = tuple((name, f.checker()) for name, f in FIELDS.items())


def _check_together(r: ExplainRequest) -> None:
    """The checks that need more than one field, or more than a field's declaration."""
    texts = [r.prompt] if isinstance(r.prompt, str) else [m["content"] for m in r.prompt]
    if not any(text.strip() for text in texts):
        raise InputError("the prompt is empty")
    if r.target is not None and not r.target:
        raise InputError("the target is empty")
    if r.contrast is not None and not r.contrast:
        raise InputError("the contrast is empty")
    _check_levels(r.levels)
    _check_documents(r, texts)
    if r.contrast is not None and r.target_granularity != "token":
        raise InputError("a contrast has one column of relevance already; leave target_granularity at 'token'")
    if "spans" in r.levels and r.spans is None and not r.delimiter:
        raise InputError("granularity 'spans' needs character spans or a delimiter")
    if "spans" not in r.levels and (r.spans is not None or r.delimiter is not None):
        raise InputError(f"spans and delimiter need granularity 'spans', not {r.granularity!r}")


def _check_documents(r: ExplainRequest, texts: list[str]) -> None:
    """Documents that are there, not empty, and not in the prompt's ``texts`` already (each is found in the rendered
    prompt by its text, which the question must not hold too); granularity 'document' needs them."""
    documents = r.document_texts
    if documents is None:
        if "document" in r.levels:
            raise InputError("granularity 'document' needs documents")
        return
    if not documents:
        raise InputError("field 'documents': the list is empty")
    for i, (_, text) in enumerate(documents, 1):
        if not text.strip():
            raise InputError(f"field 'documents': document {i} is empty")
        if any(text.strip() in t for t in texts):
            raise InputError(f"field 'documents': the prompt already holds document {i}; give the question alone")


def _check_levels(levels: tuple[str, ...]) -> None:
    """Known granularities, coarse to fine, none twice."""
    if not levels:
        raise InputError("field 'granularity': no levels given")
    for name in levels:
        if name not in GRANULARITIES:
            raise InputError(
                f"field 'granularity': unknown granularity {name!r}; available: {', '.join(GRANULARITIES)}"
            )
    for coarse, fine in itertools.pairwise(levels):
        if _RANK[fine] >= _RANK[coarse]:
            order = " > ".join(sorted(_RANK, key=_RANK.__getitem__, reverse=True))
            raise InputError(
                f"field 'granularity': levels go coarse to fine ({order}), so {fine!r} cannot follow {coarse!r}"
            )
