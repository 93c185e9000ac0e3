"""The graph contract: the one place that names every graph input and output, its type and its axes.

The exporter writes graphs to it and records it in the manifest ``atman.json``; the runtime checks an exported
folder against it before running anything. Bump the version whenever a name, type or axis changes.

Version 1 graphs take token ids. Version 2 graphs take input embeddings instead (``inputs_embeds``): those of an
image-text model's text model, whose image positions the runtime fills with the vision graph's features; such a
folder also holds ``vision.onnx`` and the text embedding matrix ``embeddings.npy``.

Versions 3 (token ids) and 4 (input embeddings) add a second cache, ``row_past``: each row's own keys and values
of the positions after the shared ``past`` and before this call's, and return ``present`` for this call's positions
only. So a long suffix runs in query chunks, each against the keys before it, with attention scores of
``chunk x keys`` instead of ``suffix x keys`` (exact: attention is causal). A folder of any version loads; versions
1 and 2 run each suffix in one call.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from atman_onnx.core.errors import ContractError

CONTRACT_VERSION = 3  # token ids in, row cache
EMBEDS_CONTRACT_VERSION = 4  # input embeddings in (image-text models), row cache
VERSIONS = {1: "ids", 2: "embeds", 3: "ids", 4: "embeds"}  # 1 and 2: no row cache, present of every position
# Opset 23 has ONNX's fused ``Attention``, which log-additive graphs use (onnxruntime 1.23 and later run it); an
# older opset writes the same attention out op by op.
DEFAULT_OPSET = 23
MANIFEST_FILE = "atman.json"
GRAPH_FILE = "model.onnx"
VISION_FILE = "vision.onnx"  # version 2: pixel_values [tiles, 3, S, S] -> image_features [tiles, tokens, hidden]
EMBEDDINGS_FILE = "embeddings.npy"  # version 2: the text embedding matrix [vocab, hidden], float32
TOKENIZER_FILE = "tokenizer.json"
MODES = ("log_additive", "multiplicative")

# name -> (element type, axes). Axis names are symbolic (dynamic) except where the model fixes them.
# "seq" counts the tokens fed in this call; "total" = past + seq counts every key position.
INPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "input_ids": ("int64", ("batch", "seq")),
    "attention_mask": ("int64", ("batch", "total")),
    "attention_scale": ("float32", ("batch", "total")),  # AtMan factor per key position, 1.0 = untouched
    "label_positions": ("int64", ("batch", "labels")),  # positions (within seq) whose next token is scored
    "labels": ("int64", ("batch", "labels")),  # the next-token ids scored there
}
OUTPUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "label_logprobs": ("float32", ("batch", "labels")),  # log p(labels | prefix up to label_positions)
    "label_logits": ("float32", ("batch", "labels", "vocab")),  # logits at label_positions only
    "inputs_embeds": ("float32", ("batch", "seq", "hidden")),  # embedding-layer output, before any block
}
# Then, per layer i: the keys and values of an earlier, unperturbed pass over the first "past" positions, shared
# by every row of the batch, and the keys and values of all "total" positions after this call.
# Versions 3 and 4 then take, per layer, each row's own keys and values of the "row_past" positions between the
# shared past and this call ("total" = past + row_past + seq), and return those of this call's "seq" positions only.
PAST = ("float32", ("1", "kv_heads", "past", "head_dim"))
ROW_PAST = ("float32", ("batch", "kv_heads", "row_past", "head_dim"))
EMBEDS_INPUT = ("float32", ("batch", "seq", "hidden"))  # versions 2 and 4, in the place of input_ids
PRESENT = ("float32", ("batch", "kv_heads", "total", "head_dim"))  # versions 1 and 2
PRESENT_NEW = ("float32", ("batch", "kv_heads", "seq", "head_dim"))  # versions 3 and 4


def attention_planes(num_heads: int, fused: bool) -> int:
    """The [queries x keys] float planes one layer's attention holds at its peak, by which the runtime budgets a
    call's memory: a fused ``Attention`` operator (log-additive graphs of opset 23 and later) holds its heads'
    probabilities and the additive bias; attention written op by op (the multiplicative mode, logit softcapping,
    older opsets) holds scores, masked scores and weights of every head."""
    return num_heads + 1 if fused else 3 * num_heads


def past_names(num_layers: int) -> list[str]:
    return [f"past.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


def row_past_names(num_layers: int) -> list[str]:
    return [f"row_past.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


def present_names(num_layers: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


def graph_inputs(num_layers: int, embeds: bool = False, rows: bool = True) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The inputs in order: token ids (or, with ``embeds``, input embeddings), the other contract inputs, the
    shared cache, and (``rows``: versions 3 and 4) the row cache."""
    first = {"inputs_embeds": EMBEDS_INPUT} if embeds else {"input_ids": INPUTS["input_ids"]}
    rest = {name: spec for name, spec in INPUTS.items() if name != "input_ids"}
    own = dict.fromkeys(row_past_names(num_layers), ROW_PAST) if rows else {}
    return {**first, **rest, **dict.fromkeys(past_names(num_layers), PAST), **own}


def graph_outputs(num_layers: int, embeds: bool = False, rows: bool = True) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The outputs in order; a graph that takes input embeddings does not return them again."""
    outputs = {name: spec for name, spec in OUTPUTS.items() if not (embeds and name == "inputs_embeds")}
    return {**outputs, **dict.fromkeys(present_names(num_layers), PRESENT_NEW if rows else PRESENT)}


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
    # num_layers, num_heads, kv_heads, head_dim, intermediate_size; attention_planes (``attention_planes``; absent in
    # folders written before it: attention op by op)
    dims: dict[str, int]
    special_tokens: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"  # of the graph's weights and matmuls: fp32, fp16, int8 (inputs/outputs are float32 always)
    vision: dict[str, Any] = field(
        default_factory=dict
    )  # version 2: image token id, tokens per tile, tile size, validation

    @property
    def takes_embeds(self) -> bool:
        """Whether the graph's first input is input embeddings (versions 2 and 4) rather than token ids."""
        return VERSIONS[self.contract_version] == "embeds"

    @property
    def row_cache(self) -> bool:
        """Whether the graph takes a row cache and returns the keys and values of the fed positions only (versions
        3 and 4), so that a suffix can run in query chunks."""
        return self.contract_version >= CONTRACT_VERSION

    @property
    def stop_ids(self) -> set[int]:
        """The token ids that end generation."""
        return set(self.special_tokens.get("eos_token_ids", []))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def write(self, folder: Path) -> Path:
        """Write ``atman.json`` whole (through a temporary file): a folder has its manifest or none."""
        path = Path(folder) / MANIFEST_FILE
        partial = path.with_name(f".{MANIFEST_FILE}.partial")
        partial.write_text(self.to_json() + "\n")
        os.replace(partial, path)
        return path


def contract_io(num_layers: int, embeds: bool = False, rows: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inputs and outputs as the manifest records them: ``{name: {"type": ..., "axes": [...]}}``."""

    def table(spec: dict[str, tuple[str, tuple[str, ...]]]) -> dict[str, Any]:
        return {name: {"type": dtype, "axes": list(axes)} for name, (dtype, axes) in spec.items()}

    return table(graph_inputs(num_layers, embeds, rows)), table(graph_outputs(num_layers, embeds, rows))


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
    if version not in VERSIONS:
        raise ContractError(
            f"{path} has graph contract version {version}; this atman-onnx reads versions "
            f"{', '.join(map(str, VERSIONS))}: re-export the model"
        )
    try:
        manifest = Manifest(**data)
    except TypeError as exc:
        raise ContractError(f"{path} does not match contract version {version}: {exc}") from None
    if manifest.mode not in MODES:
        raise ContractError(f"{path} names unknown mode {manifest.mode!r}; known: {', '.join(MODES)}")
    expected_in, expected_out = contract_io(
        manifest.dims.get("num_layers", -1), manifest.takes_embeds, manifest.row_cache
    )
    if set(manifest.inputs) != set(expected_in) or set(manifest.outputs) != set(expected_out):
        raise ContractError(f"{path} lists graph inputs/outputs that differ from contract {version}")
    needed = (GRAPH_FILE, TOKENIZER_FILE) + ((VISION_FILE, EMBEDDINGS_FILE) if manifest.takes_embeds else ())
    for name in needed:
        if not (folder / name).is_file():
            raise ContractError(f"{folder} is missing {name}: the export is incomplete, run it again")
    return manifest
