"""atman-onnx: AtMan explanations for generative transformers, run through ONNX Runtime without PyTorch."""

from atman_onnx.explainer import Explainer
from atman_onnx.explanation import Explanation, Token, Unit
from atman_onnx.runtime.errors import AtmanError

__all__ = ["AtmanError", "Explainer", "Explanation", "Token", "Unit"]
__version__ = "0.1.0"
