"""Export a Hugging Face causal LM to an AtMan ONNX graph plus tokenizer files and the manifest ``atman.json``.

The manifest is written last: a folder holds a manifest only once its graph was exported and validated.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from pathlib import Path

import torch

from atman_onnx.export import precision as lighter
from atman_onnx.export import source
from atman_onnx.export.validate import validate
from atman_onnx.models.graph import AtmanGraph, patch
from atman_onnx.models.registry import family
from atman_onnx.core.contract import (
    CONTRACT_VERSION,
    GRAPH_FILE,
    INPUTS,
    MANIFEST_FILE,
    MODES,
    TOKENIZER_FILE,
    Manifest,
    contract_io,
    graph_inputs,
    graph_outputs,
    past_names,
)
from atman_onnx.core.errors import AtmanError

DEFAULT_OPSET = 18
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


def _trace(graph_module: AtmanGraph, path: Path, opset: int, external_data: bool) -> None:
    """torch.export the wrapper to ONNX with dynamic batch, sequence, past and label axes."""
    layers, kv_heads, head_dim = (graph_module.dims[k] for k in ("num_layers", "kv_heads", "head_dim"))
    past, seq = 3, 5
    example = {
        "input_ids": torch.zeros(2, seq, dtype=torch.int64),
        "attention_mask": torch.ones(2, past + seq, dtype=torch.int64),
        "attention_scale": torch.ones(2, past + seq),
        "label_positions": torch.tensor([[2, 3, 4]] * 2),
        "labels": torch.zeros(2, 3, dtype=torch.int64),
    }
    cache = [torch.randn(1, kv_heads, past, head_dim) for _ in past_names(layers)]
    axes = {name: torch.export.Dim(name) for name in ("batch", "seq", "total", "labels", "past")}
    dynamic = [{i: axes[a] for i, a in enumerate(INPUTS[name][1])} for name in example]
    dynamic.append(tuple({2: axes["past"]} for _ in cache))
    torch.onnx.export(
        graph_module,
        (*example.values(), *cache),
        str(path),
        input_names=list(graph_inputs(layers)),
        output_names=list(graph_outputs(layers)),
        dynamic_shapes=tuple(dynamic),
        opset_version=opset,
        dynamo=True,
        external_data=external_data,
        verbose=False,
    )


def export(
    model: str,
    out_dir: str | Path,
    mode: str = "log_additive",
    gguf_file: str | None = None,
    opset: int = DEFAULT_OPSET,
    dtype: str = "fp32",
    quantize: str | None = None,
) -> Manifest:
    """Export ``model`` (hub id, local folder or ``bundled:smollm2``) into ``out_dir``; returns the manifest.

    ``dtype="fp16"`` or ``quantize="int8"`` (or ``"int8-dynamic"``) write a lighter graph: the float32 graph is
    traced and validated first, then converted (``atman_onnx.export.precision``) and validated again against the
    float32 PyTorch model, with looser, recorded tolerances."""
    if mode not in MODES:
        raise AtmanError(f"unknown mode {mode!r}; supported: {', '.join(MODES)}")
    precision = lighter.precision_name(dtype, quantize)
    out = Path(out_dir)
    lm, tokenizer = source.load(model, gguf_file)
    config = lm.config
    architecture = family(config.model_type)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    graph_module = AtmanGraph(patch(lm, mode)).eval()
    big = sum(p.numel() * p.element_size() for p in lm.parameters()) > TWO_GB
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (Path(tmp) / name).is_file():
                shutil.copy(Path(tmp) / name, out / name)
    if precision == "fp32":
        _trace(graph_module, out / GRAPH_FILE, opset, external_data=big)
        validation = validate(graph_module, out / GRAPH_FILE)
    else:
        with tempfile.TemporaryDirectory(dir=out, prefix=".fp32-") as tmp:
            fp32_graph = Path(tmp) / GRAPH_FILE
            _trace(graph_module, fp32_graph, opset, external_data=big)
            float32_figures = validate(graph_module, fp32_graph)
            conversion = lighter.convert(fp32_graph, out / GRAPH_FILE, precision, external_data=big)
        validation = {
            **lighter.validate_lighter(graph_module, out / GRAPH_FILE, precision),
            "conversion": conversion,
            "float32_graph": float32_figures,
        }
    inputs, outputs = contract_io(graph_module.dims["num_layers"])
    manifest = Manifest(
        contract_version=CONTRACT_VERSION,
        architecture=architecture,
        model_type=config.model_type,
        mode=mode,
        source=model if not gguf_file else f"{model} ({gguf_file})",
        inputs=inputs,
        outputs=outputs,
        vocab_size=int(config.vocab_size),
        hidden_size=int(config.hidden_size),
        max_positions=int(config.max_position_embeddings),
        dims=graph_module.dims,
        special_tokens=_special_tokens(tokenizer, lm),
        versions={**_versions(), "opset": str(opset)},
        validation=validation,
        precision=precision,
    )
    manifest.write(out)
    return manifest
