"""Which Hugging Face architectures atman-onnx supports, keyed by ``config.model_type``.

Every supported model runs its attention through transformers' attention interface, so supporting one more
architecture is one line here plus a parity test; nothing in its modeling code is forked.
"""

from __future__ import annotations

from atman_onnx.core.errors import AtmanError

# model_type -> family. The family names the attention layout the parity tests cover.
SUPPORTED: dict[str, str] = {
    "gpt2": "gpt2",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
}


class UnsupportedArchitectureError(AtmanError, ValueError):
    """Raised for a model whose architecture atman-onnx cannot manipulate."""


def family(model_type: str) -> str:
    """The family of ``model_type``, or a one-line error naming it and listing what is supported."""
    try:
        return SUPPORTED[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(SUPPORTED))}"
        ) from None
