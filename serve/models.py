"""The models a service serves: one ``Explainer`` (one ONNX Runtime session) per exported folder, named by the
folder's name, loaded before the server listens and warmed up once it does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atman_onnx.core.contract import load_manifest
from atman_onnx.core.errors import InputError
from atman_onnx.explainer import Explainer
from atman_onnx.prepare import Prepared
from atman_onnx.request import ExplainRequest
from atman_onnx.runtime.encode import encode_prompt
from atman_onnx.serve.config import ServeConfig
from atman_onnx.serve.errors import ApiError

WARM_UP = ExplainRequest(prompt="Hello, world.", target=" Hello", batch_size=1)


@dataclass(frozen=True)
class ServedModel:
    """One served model: its name (the folder's) and its explainer, shared by every request for it."""

    name: str
    explainer: Explainer

    def describe(self, config: ServeConfig) -> dict[str, Any]:
        """What ``GET /v1/models`` says of this model."""
        m = self.explainer.manifest
        return {
            "name": self.name,
            "source": m.source,
            "architecture": m.architecture,
            "mode": m.mode,
            "precision": m.precision,
            "provider": self.explainer.graph.device,
            "max_positions": m.max_positions,
            "limits": {**config.limits, "max_input_tokens": self.max_input_tokens(config)},
        }

    def max_input_tokens(self, config: ServeConfig) -> int:
        return min(
            config.max_input_tokens or self.explainer.manifest.max_positions, self.explainer.manifest.max_positions
        )

    def prepare(self, body: dict[str, Any], config: ServeConfig) -> Prepared:
        """``POST /v1/explain``'s body (without ``model``) as a request prepared once (``Explainer.prepare``) and
        sized (``check_size``), ready to admit. It tokenizes and decodes images: the app runs it off the event
        loop."""
        prepared = self.explainer.prepare(ExplainRequest.from_dict(body))
        self.check_size(prepared, config)
        return prepared

    def check_size(self, prepared: Prepared, config: ServeConfig) -> None:
        """Refuse (422) a prompt plus target (or contrast, explained as a second sequence) longer than
        ``--max-input-tokens``, before it is admitted: a generated target counts as ``max_new_tokens``."""
        limit = self.max_input_tokens(config)
        if prepared.n_tokens > limit:
            what = (
                "prompt and target"
                if prepared.request.contrast is None
                else "prompt and the longer of target and contrast"
            )
            raise InputError(f"the request has {prepared.n_tokens} tokens ({what}); this service takes at most {limit}")

    def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/tokenize``: the prompt's tokens (id, text, character offsets in the text fed); the prompt is
        checked as ``ExplainRequest`` checks it."""
        unknown = sorted(set(body) - {"prompt"})
        if unknown:
            raise InputError(f"unknown field {unknown[0]!r}; fields: model, prompt")
        codec = self.explainer.codec
        encoded = encode_prompt(codec, ExplainRequest.from_dict(body).prompt)
        tokens = [
            {"id": i, "text": text, "start": start, "end": end}
            for i, text, (start, end) in zip(encoded.ids, codec.token_texts(encoded.ids), encoded.offsets, strict=True)
        ]
        return {"model": self.name, "text": encoded.text, "tokens": tokens}

    def warm_up(self) -> None:
        """One small explanation, so the first request does not pay for ONNX Runtime's first-call set-up."""
        self.explainer.run(WARM_UP)


def load_models(config: ServeConfig) -> dict[str, ServedModel]:
    """Open every folder (checking its manifest first); names must differ."""
    models: dict[str, ServedModel] = {}
    for folder in config.folders:
        name = Path(folder).resolve().name
        if name in models:
            raise InputError(f"two models are named {name!r}: serve folders with different names")
        load_manifest(folder)
        explainer = Explainer.load(folder, config.provider, config.threads, config.memory_budget_mb)
        models[name] = ServedModel(name, explainer)
    return models


def pick(models: dict[str, ServedModel], name: Any) -> ServedModel:
    """The model a body names: optional when one is served; unknown names are 404."""
    if name is None:
        if len(models) == 1:
            return next(iter(models.values()))
        raise ApiError(
            "invalid_request", f"field 'model' is required when several models are served; models: {', '.join(models)}"
        )
    if not isinstance(name, str):
        raise ApiError("invalid_request", f"field 'model' must be a string, got {name!r} ({type(name).__name__})")
    if name not in models:
        raise ApiError("not_found", f"unknown model {name!r}; models: {', '.join(models)}")
    return models[name]
