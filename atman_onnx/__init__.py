"""atman-onnx: AtMan explanations for generative transformers, run through ONNX Runtime without PyTorch."""

from atman_onnx.explainer import Explainer
from atman_onnx.explanation import Explanation, Token
from atman_onnx.runtime.errors import AtmanError

__all__ = ["AtmanError", "Explainer", "Explanation", "Token"]
__version__ = "0.1.0"
