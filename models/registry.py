"""The one place to add an architecture: a spec row per ``config.model_type``.

A row says what the family's attention calls pass (``keywords``: each one honoured by ``atman_attention``, which
refuses any other), how the model's sizes are read, what else the export must honour (``quirks``, with the knobs
that implement them), and which real checkpoints it covers. Every supported row has a parity test on a tiny random
model; the README's support table is generated from these rows and those tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from atman_onnx.core.errors import AtmanError

# What every llama-style decoder layer hands its attention function, besides query, key, value and the mask.
LLAMA = frozenset({"dropout", "scaling", "position_ids", "use_cache"})
SLIDING = LLAMA | {"sliding_window"}


@dataclass(frozen=True)
class Architecture:
    """How atman-onnx exports one ``model_type``."""

    model_type: str
    keywords: frozenset[str]  # attention keywords the family passes, each honoured by atman_attention
    checkpoints: tuple[str, ...] = ()  # real hub checkpoints this row covers
    quirks: tuple[str, ...] = ()  # what else the export honours, in words
    intermediate: str = "intermediate_size"  # the config field of the MLP width (absent: 4 x hidden)
    relay_scale: bool = False  # the decoder layer drops its keyword arguments: hand atman_scale on by hooks
    experts: str | None = None  # MoE: the experts implementation that traces to ONNX
    logits_divisor: str | None = None  # config field the head's logits are divided by
    # every layer's choices are attributes set at init, none keyed on its index in forward (transformers 5.25): the
    # export may trace two layers and repeat the second where all are alike (export/alike.py, tests/test_repeat.py)
    repeat_layers: bool = False


ARCHITECTURES: dict[str, Architecture] = {
    a.model_type: a
    for a in [
        Architecture(
            "gpt2",
            LLAMA,
            ("openai-community/gpt2", "distilbert/distilgpt2"),
            ("learned positions", "Conv1D layers"),
            intermediate="n_inner",
            repeat_layers=True,
        ),
        Architecture(
            "llama",
            LLAMA,
            ("HuggingFaceTB/SmolLM2-135M-Instruct", "meta-llama/Llama-3.2-1B-Instruct"),
            ("grouped-query attention",),
            repeat_layers=True,
        ),
        Architecture(
            "mistral",
            SLIDING,
            ("mistralai/Mistral-7B-Instruct-v0.3",),
            ("sliding window on every layer (the mask enforces it over a full cache)",),
            repeat_layers=True,
        ),
        Architecture(
            "qwen2",
            SLIDING,
            ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct"),
            ("q/k/v biases", "sliding window on layers >= max_window_layers when use_sliding_window"),
            repeat_layers=True,
        ),
        Architecture(
            "qwen3",
            SLIDING,
            ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B"),
            ("per-head q/k RMSNorm", "sliding window when use_sliding_window"),
            repeat_layers=True,
        ),
        Architecture(
            "qwen3_moe",
            SLIDING | {"output_router_logits"},
            ("Qwen/Qwen3-30B-A3B",),
            ("experts traced with batched_mm",),
            experts="batched_mm",
            repeat_layers=True,
        ),
        Architecture(
            "mixtral",
            SLIDING | {"output_router_logits"},
            ("mistralai/Mixtral-8x7B-Instruct-v0.1",),
            ("experts traced with batched_mm", "sliding window"),
            experts="batched_mm",
            repeat_layers=True,
        ),
        Architecture(
            "gemma",
            LLAMA,
            ("google/gemma-2b-it", "google/gemma-7b-it"),
            ("embeddings scaled by sqrt(hidden) inside the embedding module",),
            repeat_layers=True,
        ),
        Architecture(
            "gemma2",
            SLIDING - {"use_cache"} | {"softcap"},
            ("google/gemma-2-2b-it",),
            (
                "attention softcap tanh(s / c) * c before the manipulation",
                "final logit softcap",
                "scaling query_pre_attn_scalar ** -0.5",
                "alternating sliding and full layers",
                "scaled embeddings",
            ),
        ),
        Architecture(
            "gemma3_text",
            SLIDING - {"use_cache"},
            ("google/gemma-3-270m-it", "google/gemma-3-1b-it"),
            (
                "scaling query_pre_attn_scalar ** -0.5",
                "5 sliding layers to 1 full",
                "per-layer rope bases",
                "scaled embeddings",
                "final logit softcap when configured",
            ),
        ),
        Architecture(
            "phi3",
            SLIDING,
            ("microsoft/Phi-3.5-mini-instruct", "microsoft/Phi-4-mini-instruct"),
            ("fused qkv projection", "sliding window when configured"),
            repeat_layers=True,
        ),
        Architecture("phi", LLAMA, ("microsoft/phi-2",), ("partial rotary", "biased LM head"), repeat_layers=True),
        Architecture(
            "smollm3", SLIDING, ("HuggingFaceTB/SmolLM3-3B",), ("NoPE layers", "sliding window when configured")
        ),
        Architecture(
            "granite",
            LLAMA,
            ("ibm-granite/granite-3.3-2b-instruct", "ibm-granite/granite-3.1-8b-instruct"),
            ("scaling attention_multiplier", "embedding and residual multipliers", "logits divided by logits_scaling"),
            logits_divisor="logits_scaling",
            repeat_layers=True,
        ),
        Architecture(
            "olmo2",
            LLAMA,
            ("allenai/OLMo-2-0425-1B-Instruct", "allenai/OLMo-2-1124-7B-Instruct"),
            ("q/k RMSNorm over the full projection", "post-norm layers"),
            repeat_layers=True,
        ),
        Architecture(
            "stablelm",
            frozenset({"dropout", "scaling", "position_ids"}),
            ("stabilityai/stablelm-2-1_6b-chat", "stabilityai/stablelm-2-zephyr-1_6b"),
            ("decoder layer drops keyword arguments: atman_scale handed on by hooks", "partial rotary"),
            relay_scale=True,
            repeat_layers=True,
        ),
        Architecture(
            "gpt_neox",
            LLAMA,
            ("EleutherAI/pythia-160m", "EleutherAI/pythia-1.4b"),
            ("no key/value head attribute: heads read from tensor shapes", "partial rotary", "parallel residual"),
            repeat_layers=True,
        ),
        Architecture(
            "starcoder2",
            SLIDING,
            ("bigcode/starcoder2-3b",),
            ("sliding window on every layer", "biases"),
            repeat_layers=True,
        ),
        Architecture(
            "gptj",
            LLAMA,
            ("EleutherAI/gpt-j-6b",),
            ("interleaved partial rotary", "biased LM head"),
            intermediate="n_inner",
            repeat_layers=True,
        ),
    ]
}

# Families whose attention never reaches a registered attention function: patching them would change nothing, so
# relevance would be silently wrong. Each is refused in one line.
REFUSED: dict[str, str] = {
    "falcon": "its attention classes run their own SDPA, flash or eager code (ALiBi folded into the mask) and never "
    "call a registered attention function",
    "bloom": "its attention (ALiBi) is its own code and never calls a registered attention function",
    "mpt": "its attention (ALiBi) is its own code and never calls a registered attention function",
    "gpt_neo": "its attention is its own code and never calls a registered attention function",
    "nemotron": "its decoder layers drop keyword arguments on the way to attention (not yet relayed)",
}


# Image-text families: a vision tower whose features take the place of the ``<image>`` tokens' embeddings, and a text
# model (one of the rows above, found by its own model_type) that AtMan manipulates. model_type -> real checkpoints.
VISION_LANGUAGE: dict[str, tuple[str, ...]] = {
    "idefics3": ("HuggingFaceM4/Idefics3-8B-Llama3",),
    "smolvlm": (
        "HuggingFaceTB/SmolVLM-256M-Instruct",
        "HuggingFaceTB/SmolVLM-500M-Instruct",
        "HuggingFaceTB/SmolVLM2-256M-Video-Instruct",
    ),
}


class UnsupportedArchitectureError(AtmanError, ValueError):
    """Raised for a model whose architecture atman-onnx cannot manipulate."""


def architecture(model_type: str) -> Architecture:
    """The spec row of ``model_type``, or a one-line error naming it and why, listing what is supported."""
    if model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    why = f": {REFUSED[model_type]}" if model_type in REFUSED else ""
    raise UnsupportedArchitectureError(
        f"unsupported architecture {model_type!r}{why}; supported: {', '.join(sorted(ARCHITECTURES))}"
    )
