"""Export a Hugging Face causal LM to an AtMan ONNX graph plus tokenizer files and the manifest ``atman.json``.

The export runs in stages (load, trace, optimise, save, validate, then convert and validate again for a lighter
precision, and write), each reported in one line to an optional ``log`` callback. What torch, torch.onnx,
onnxscript and transformers print, warn and log along the way is held back for the duration of each stage unless
``verbose``. The manifest is written last: a folder holds a manifest only once its graph was exported and validated.

An image-text model (Idefics3, SmolVLM) also gets its vision graph (traced and validated the same way), its text
embedding matrix and its processor's files, and the decoder graph takes input embeddings (contract version 2).
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atman_onnx.core.contract import (
    CONTRACT_VERSION,
    DEFAULT_OPSET,
    EMBEDDINGS_FILE,
    EMBEDS_CONTRACT_VERSION,
    GRAPH_FILE,
    MANIFEST_FILE,
    MODES,
    TOKENIZER_FILE,
    VISION_FILE,
    Manifest,
    attention_planes,
    contract_io,
    graph_inputs,
    graph_outputs,
    past_names,
    row_past_names,
)
from atman_onnx.core.errors import AtmanError
from atman_onnx.export import precision as lighter
from atman_onnx.export import source
from atman_onnx.export.alike import TRACED_DEPTH, alike, decoder_layers, shallow
from atman_onnx.export.optimise import optimise
from atman_onnx.export.repeat import repeat_layers
from atman_onnx.export.stages import Log, Stages
from atman_onnx.export.validate import describe, validate, validate_vision
from atman_onnx.models.graph import AtmanGraph, VisionGraph
from atman_onnx.models.patch import check, patch
from atman_onnx.models.registry import architecture

TWO_GB = 2 * 1024**3
TOKENIZER_FILES = (TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def _versions() -> dict[str, str]:
    names = ("atman-onnx", "torch", "transformers", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _special_tokens(tokenizer, model) -> dict:
    """Special tokens the runtime needs: template variables and the ids that end generation."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # an image-text model's processor holds its tokenizer
    generation = getattr(model, "generation_config", None)
    eos = generation.eos_token_id if generation is not None else None
    eos_ids = set([eos] if isinstance(eos, int) else (eos or []))
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    return {
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "eos_token_ids": sorted(eos_ids),
    }


def _megabytes(path: Path) -> str:
    """The size of the graph at ``path`` with its external data file, if any."""
    size = sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))
    return f"{size / 1024**2:.1f} MB"


def _trace(graph_module: AtmanGraph, opset: int) -> torch.onnx.ONNXProgram:
    """torch.export the wrapper to an ONNX program, not yet optimised, with dynamic batch, sequence, past and
    label axes."""
    layers, kv_heads, head_dim = (graph_module.dims[k] for k in ("num_layers", "kv_heads", "head_dim"))
    past, rows, seq = 3, 2, 5
    hidden = graph_module.embed.embedding_dim
    first = torch.randn(2, seq, hidden) if graph_module.takes_embeds else torch.zeros(2, seq, dtype=torch.int64)
    example = {
        "inputs": first,
        "attention_mask": torch.ones(2, past + rows + seq, dtype=torch.int64),
        "attention_scale": torch.ones(2, past + rows + seq),
        "label_positions": torch.tensor([[2, 3, 4]] * 2),
        "labels": torch.zeros(2, 3, dtype=torch.int64),
    }
    cache = [torch.randn(1, kv_heads, past, head_dim) for _ in past_names(layers)]
    row_cache = [torch.randn(2, kv_heads, rows, head_dim) for _ in row_past_names(layers)]
    axes = {name: torch.export.Dim(name) for name in ("batch", "seq", "total", "labels", "past", "row_past")}
    specs = list(graph_inputs(layers, graph_module.takes_embeds).values())
    dynamic = [{i: axes[a] for i, a in enumerate(axis_names) if a in axes} for _, axis_names in specs[: len(example)]]
    # the cache arguments (*caches): the shared past, then the row cache
    cache_axes = tuple([{2: axes["past"]}] * len(cache) + [{0: axes["batch"], 2: axes["row_past"]}] * len(row_cache))
    program = torch.onnx.export(
        graph_module,
        (*example.values(), *cache, *row_cache),
        input_names=list(graph_inputs(layers, graph_module.takes_embeds)),
        output_names=list(graph_outputs(layers, graph_module.takes_embeds)),
        dynamic_shapes=(*dynamic, cache_axes),
        opset_version=opset,
        dynamo=True,
        optimize=False,
        verbose=False,
    )
    assert program is not None  # the dynamo exporter always returns its program
    return program


def _trace_alike(graph_module: AtmanGraph, opset: int) -> tuple[torch.onnx.ONNXProgram, str]:
    """The traced program and how it was made: where the family allows it and every decoder layer is alike
    (``export.alike``), two layers traced and the second repeated to the model's depth (``export.repeat``); else
    every layer traced."""
    depth = graph_module.dims["num_layers"]
    found = decoder_layers(graph_module.body, depth)
    if not (depth > TRACED_DEPTH and found and architecture(graph_module.config.model_type).repeat_layers):
        return _trace(graph_module, opset), f"all {depth} layers traced"
    if not alike(graph_module.config, found[1]):
        return _trace(graph_module, opset), f"all {depth} layers traced: they differ"
    with shallow(graph_module, found[0]):
        program = _trace(graph_module, opset)
    tensors = {**dict(graph_module.named_parameters()), **dict(graph_module.named_buffers())}
    weights = {name: t.detach().numpy() for name, t in tensors.items() if t.dtype != torch.bfloat16}
    if repeat_layers(program.model, f"body.{found[0]}", depth, graph_module.takes_embeds, weights):
        return program, f"{TRACED_DEPTH} of {depth} layers traced, the rest repeated"
    return _trace(graph_module, opset), f"all {depth} layers traced: layer 0 does not mirror layer 1"


def _float32_graph(
    stage: Stages, graph_module: AtmanGraph, path: Path, opset: int, external_data: bool
) -> tuple[dict, bool]:
    """Trace, optimise and save the float32 graph to ``path`` and validate it; returns the validation figures and
    whether the graph's attention is ONNX's fused ``Attention`` operator."""
    with stage("trace") as note:
        program, how = _trace_alike(graph_module, opset)
        traced = len(program.model.graph)
        note(f"torch.export to ONNX opset {opset}, {traced} nodes ({how})")
    with stage("optimise") as note:
        optimise(program.model)
        fused = sum(node.op_type == "Attention" for node in program.model.graph) == graph_module.dims["num_layers"]
        note(f"{traced} -> {len(program.model.graph)} nodes" + (", fused attention" if fused else ""))
    with stage("save") as note:
        program.save(str(path), external_data=external_data)
        note(f"float32 graph, {_megabytes(path)}")
    with stage("validate") as note:
        figures = validate(graph_module, path)
        note(describe(figures["max_abs_diff"]))
    return figures, fused


def _vision(stage: Stages, lm: Any, out: Path, opset: int) -> dict:  # Any: a HF model's attributes are dynamic
    """Trace, save and validate an image-text model's vision graph, and save its text embedding matrix; returns
    the manifest's ``vision`` record."""
    vision_module = VisionGraph(lm).eval()
    tile = lm.config.vision_config.image_size
    with stage("vision") as note:
        program = torch.onnx.export(
            vision_module,
            (torch.randn(2, 3, tile, tile),),
            input_names=["pixel_values"],
            output_names=["image_features"],
            dynamic_shapes=({0: torch.export.Dim("tiles")},),
            opset_version=opset,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
        assert program is not None  # the dynamo exporter always returns its program
        program.save(str(out / VISION_FILE))
        figures = validate_vision(vision_module, out / VISION_FILE, tile)
        note(f"{VISION_FILE} {_megabytes(out / VISION_FILE)}, {describe(figures['max_abs_diff'])}")
    embeddings = lm.get_input_embeddings().weight.detach().float().numpy()
    np.save(out / EMBEDDINGS_FILE, embeddings)
    tokens = lm.model.image_seq_len
    return {
        "image_token_id": int(lm.config.image_token_id),
        "tokens_per_tile": int(tokens),
        "tile_size": int(tile),
        "scale_factor": int(lm.config.scale_factor),
        "validation": figures,
    }


def _write(out: Path, tokenizer, manifest: Manifest, model: str) -> list[str]:
    """Copy the tokenizer files (and an image-text model's image settings) into ``out``, then write the manifest;
    returns the names written."""
    written = []
    if manifest.takes_embeds:
        written += source.save_image_settings(model, manifest.vision["tokens_per_tile"], out)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (Path(tmp) / name).is_file():
                shutil.copy(Path(tmp) / name, out / name)
                written.append(name)
            else:  # an earlier export's file in the same folder (a chat template, say) would be read as this one's
                (out / name).unlink(missing_ok=True)
    manifest.write(out)
    return [*written, MANIFEST_FILE]


def export(
    model: str,
    out_dir: str | Path,
    mode: str = "log_additive",
    gguf_file: str | None = None,
    opset: int = DEFAULT_OPSET,
    dtype: str = "fp32",
    quantize: str | None = None,
    log: Log | None = None,
    verbose: bool = False,
) -> Manifest:
    """Export ``model`` (hub id, local folder or ``bundled:smollm2``) into ``out_dir``; returns the manifest.

    ``dtype="fp16"`` or ``quantize="int8"`` (or ``"int8-dynamic"``) write a lighter graph: the float32 graph is
    traced and validated first, then converted (``atman_onnx.export.precision``) and validated again against the
    float32 PyTorch model, with looser, recorded tolerances. ``log`` receives one line per stage; ``verbose`` lets
    the libraries' own warnings, logs and prints through."""
    if mode not in MODES:
        raise AtmanError(f"unknown mode {mode!r}; supported: {', '.join(MODES)}")
    precision = lighter.precision_name(dtype, quantize)
    out = Path(out_dir)
    origin = model if not gguf_file else f"{model} ({gguf_file})"
    stage = Stages(log, verbose)
    with stage("load") as note:
        lm, tokenizer = source.load(model, gguf_file)
        architecture = check(patch(lm, mode, fused=True)).model_type
        graph_module = AtmanGraph(lm).eval()
        config = graph_module.config  # of the text model, for an image-text model
        image_text = graph_module.takes_embeds
        kind = (
            f"{lm.config.model_type} (text model {architecture}, {mode})" if image_text else f"{architecture} ({mode})"
        )
        note(f"{kind} from {origin}")
    if image_text and precision != "fp32":
        raise AtmanError(f"{precision} is not available for image-text models yet; export them in float32")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    big = sum(p.numel() * p.element_size() for p in lm.parameters()) > TWO_GB
    if precision == "fp32":
        validation, fused = _float32_graph(stage, graph_module, out / GRAPH_FILE, opset, external_data=big)
    else:
        with tempfile.TemporaryDirectory(dir=out, prefix=".fp32-") as tmp:
            fp32_graph = Path(tmp) / GRAPH_FILE
            float32_figures, fused = _float32_graph(stage, graph_module, fp32_graph, opset, external_data=big)
            with stage("convert") as note:
                conversion = lighter.convert(fp32_graph, out / GRAPH_FILE, precision, external_data=big)
                note(f"{precision} graph, {_megabytes(out / GRAPH_FILE)}")
        with stage("validate") as note:
            figures = validate(graph_module, out / GRAPH_FILE, precision, lighter.TOLERANCE[precision])
            within = "within" if figures["within_tolerance"] else "beyond"
            note(f"{describe(figures['max_abs_diff'])} ({within} the {precision} tolerance)")
        validation = {**figures, "conversion": conversion, "float32_graph": float32_figures}
    vision = _vision(stage, lm, out, opset) if image_text else {}
    inputs, outputs = contract_io(graph_module.dims["num_layers"], image_text)
    manifest = Manifest(
        contract_version=EMBEDS_CONTRACT_VERSION if image_text else CONTRACT_VERSION,
        architecture=architecture,
        model_type=lm.config.model_type,
        mode=mode,
        source=origin,
        inputs=inputs,
        outputs=outputs,
        vocab_size=int(config.vocab_size),
        hidden_size=int(config.hidden_size),
        max_positions=int(config.max_position_embeddings),
        dims={**graph_module.dims, "attention_planes": attention_planes(graph_module.dims["num_heads"], fused)},
        special_tokens=_special_tokens(tokenizer, lm),
        versions={**_versions(), "opset": str(opset)},
        validation=validation,
        precision=precision,
        vision=vision,
    )
    with stage("write") as note:
        note(", ".join(_write(out, tokenizer, manifest, model)))
    return manifest
