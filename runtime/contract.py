"""The graph contract: the one place that names every graph input and output, its type and its axes.

The exporter writes graphs to it and records it in the manifest ``atman.json``; the runtime checks an exported
folder against it before running anything. Bump ``CONTRACT_VERSION`` whenever a name, type or axis changes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from atman_onnx.runtime.errors import ContractError

CONTRACT_VERSION = 1
MANIFEST_FILE = "atman.json"
GRAPH_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MODES = ("log_additive", "multiplicative")

# name -> (element type, axes). Axis names are symbolic (dynamic) except where the model fixes them.
INPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "input_ids": ("int64", ("batch", "seq")),
    "attention_mask": ("int64", ("batch", "seq")),
    "attention_scale": ("float32", ("batch", "seq")),  # AtMan factor per key position, 1.0 = untouched
    "label_positions": ("int64", ("batch", "labels")),  # positions whose next token is scored
    "labels": ("int64", ("batch", "labels")),  # the next-token ids scored there
}
OUTPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "label_logprobs": ("float32", ("batch", "labels")),  # log p(labels | prefix up to label_positions)
    "label_logits": ("float32", ("batch", "labels", "vocab")),  # logits at label_positions only
    "inputs_embeds": ("float32", ("batch", "seq", "hidden")),  # embedding-layer output, before any block
}


@dataclass(frozen=True)
class Manifest:
    """What ``atman.json`` records about one exported graph."""

    contract_version: int
    architecture: str
    model_type: str
    mode: str
    source: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    vocab_size: int
    hidden_size: int
    max_positions: int
    special_tokens: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.write_text(self.to_json() + "\n")
        return path


def contract_io() -> tuple[dict[str, Any], dict[str, Any]]:
    """Inputs and outputs as the manifest records them: ``{name: {"type": ..., "axes": [...]}}``."""

    def table(spec: dict[str, tuple[str, tuple[str, ...]]]) -> dict[str, Any]:
        return {name: {"type": dtype, "axes": list(axes)} for name, (dtype, axes) in spec.items()}

    return table(INPUTS), table(OUTPUTS)


def load_manifest(folder: str | Path) -> Manifest:
    """Read and check the manifest of an exported folder; raises ``ContractError`` naming what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ContractError(f"no exported model at {folder}: not a folder")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ContractError(f"{folder} has no {MANIFEST_FILE}: export a model there with `atman-onnx export`")
    try:
        data = json.loads(path.read_text())
        version = data["contract_version"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ContractError(f"{path} is not an atman-onnx manifest ({exc})") from None
    if version != CONTRACT_VERSION:
        raise ContractError(
            f"{path} has graph contract version {version}; this atman-onnx reads version {CONTRACT_VERSION}: "
            "re-export the model"
        )
    try:
        manifest = Manifest(**data)
    except TypeError as exc:
        raise ContractError(f"{path} does not match contract version {CONTRACT_VERSION}: {exc}") from None
    if manifest.mode not in MODES:
        raise ContractError(f"{path} names unknown mode {manifest.mode!r}; known: {', '.join(MODES)}")
    expected_in, expected_out = contract_io()
    if set(manifest.inputs) != set(expected_in) or set(manifest.outputs) != set(expected_out):
        raise ContractError(f"{path} lists graph inputs/outputs that differ from contract {CONTRACT_VERSION}")
    for name in (GRAPH_FILE, TOKENIZER_FILE):
        if not (folder / name).is_file():
            raise ContractError(f"{folder} is missing {name}: the export is incomplete, run it again")
    return manifest
