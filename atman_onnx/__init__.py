"""atman-onnx: AtMan explanations for generative transformers, run through ONNX Runtime without PyTorch."""

from atman_onnx.core.errors import AtmanError
from atman_onnx.explainer import Explainer
from atman_onnx.explanation import Explanation
from atman_onnx.request import ExplainRequest
from atman_onnx.runtime.units import ImageBox, TextSpan, Token, Unit

__all__ = ["AtmanError", "ExplainRequest", "Explainer", "Explanation", "ImageBox", "TextSpan", "Token", "Unit"]
__version__ = "0.1.0"
