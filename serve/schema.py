"""OpenAPI schemas of the bodies, written from the library's own declarations: each ``ExplainRequest`` field's JSON
Schema (type, bounds, choices, doc and default, from ``atman_onnx.request.FIELDS``) and the meaning of each
``Explanation.to_dict()`` key."""

from __future__ import annotations

from typing import Any

from atman_onnx.explanation import JSON_VERSION
from atman_onnx.request import FIELDS

MODEL_FIELD = {
    "type": "string",
    "description": "the served model's name (its folder's name); optional when the service serves one model",
}

EXPLANATION_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "format_version": ({"type": "integer", "const": JSON_VERSION}, "version of this JSON format"),
    "prompt": ({"type": "string"}, "the text explained (a chat prompt as rendered by the template)"),
    "target": ({"type": "string"}, "the completion explained (given, or generated greedily)"),
    "prompt_ids": ({"type": "array", "items": {"type": "integer"}}, "the prompt's token ids"),
    "target_ids": (
        {"type": "array", "items": {"type": "integer"}},
        "the target's token ids; the model is fed prompt_ids + target_ids[:-1]",
    ),
    "tokens": (
        {"type": "array", "items": {"type": "object"}},
        (
            "one per fed position: text, start/end (character span in prompt, or in target for segment "
            "'target'), segment"
        ),
    ),
    "target_tokens": (
        {"type": "array", "items": {"type": "string"}},
        "the text of each column: each target token (or target sentence; with contrast: one entry, the comparison)",
    ),
    "units": (
        {"type": "array", "items": {"type": "object"}},
        (
            "one per row of relevance: text, start/end, segment, positions (the fed positions suppressed "
            "together), location (a text span or an image box)"
        ),
    ),
    "relevance": (
        {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        (
            "one row per unit, one value per target token: CE_j(t) - CE_0(t), the rise of the target "
            "token's cross-entropy when the unit is suppressed"
        ),
    ),
    "relevance_total": ({"type": "array", "items": {"type": "number"}}, "each row summed over the target tokens"),
    "mode": ({"type": "string"}, "log_additive or multiplicative (fixed at export)"),
    "suppression_factor": ({"type": "number"}, "the suppression factor used"),
    "conceptual_threshold": ({"type": ["number", "null"]}, "the conceptual threshold used (null: off)"),
    "granularity": ({"type": "string"}, "the unit of suppression (of a search over levels: its finest level)"),
    "target_granularity": ({"type": "string"}, "what a column of relevance is: token, sentence or complete"),
    "contrast": ({"type": ["string", "null"]}, "the contrastive alternative (null: none)"),
    "contrast_ids": ({"type": ["array", "null"], "items": {"type": "integer"}}, "its token ids (null: none)"),
    "model": ({"type": "string"}, "where the model came from (the manifest's source)"),
    "provider": ({"type": "string"}, "cpu or cuda"),
    "timings": (
        {"type": "object"},
        (
            "seconds spent (generate_s, explain_s, total_s) and the work done (passes, "
            "batch_size, schedule, positions_computed)"
        ),
    ),
    "images": (
        {"type": "array", "items": {"type": "string", "contentEncoding": "base64"}},
        ("the prompt's images (base64 of their files; empty for text): units with an image location lie on them"),
    ),
    "levels": (
        {"type": "array", "items": {"type": "object"}},
        (
            "every level scored, coarse to fine, each {granularity, units, relevance} shaped as the top-level "
            "fields (one for a flat explanation); also streamed as SSE level events"
        ),
    ),
    "warnings": ({"type": "array", "items": {"type": "string"}}, "what the scores cannot tell, one line each"),
    "request_id": ({"type": "string"}, "this request's id (also in the X-Request-ID header)"),
}


def explain_request() -> dict[str, Any]:
    """The body of ``POST /v1/explain``: every ``ExplainRequest`` field's schema as declared, plus ``model``."""
    properties = {"model": MODEL_FIELD, **{name: f.schema() for name, f in FIELDS.items()}}
    required = [name for name, f in FIELDS.items() if f.required]
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


def explanation() -> dict[str, Any]:
    """The success reply of ``POST /v1/explain``: ``Explanation.to_json()``'s object plus ``request_id``."""
    return {
        "type": "object",
        "required": list(EXPLANATION_FIELDS),
        "properties": {k: {**s, "description": d} for k, (s, d) in EXPLANATION_FIELDS.items()},
    }


def tokenize_request() -> dict[str, Any]:
    """The body of ``POST /v1/tokenize``: the request's ``prompt`` as declared, plus ``model``."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "properties": {"model": MODEL_FIELD, "prompt": FIELDS["prompt"].schema()},
    }


ERROR = {
    "type": "object",
    "required": ["error", "type"],
    "properties": {
        "error": {"type": "string", "description": "one line naming the problem, as the command line prints it"},
        "type": {
            "type": "string",
            "description": "invalid_request, not_found, too_large, unsupported_media_type, "
            "unauthorized, overloaded, draining, not_ready, timeout, cancelled or internal",
        },
        "request_id": {"type": "string", "description": "this request's id (also in the X-Request-ID header)"},
    },
}
