"""atman-onnx: AtMan explanations for generative transformers, run through ONNX Runtime without PyTorch."""

from atman_onnx.core.errors import AtmanError
from atman_onnx.explainer import Explainer
from atman_onnx.explanation import Explanation
from atman_onnx.prepare import Prepared
from atman_onnx.request import ExplainRequest
from atman_onnx.runtime.execute import Executor, LocalExecutor, Stop, Stopped
from atman_onnx.runtime.units import ImageBox, TextSpan, Token, Unit

__all__ = [
    "AtmanError",
    "Executor",
    "ExplainRequest",
    "Explainer",
    "Explanation",
    "ImageBox",
    "LocalExecutor",
    "Prepared",
    "Stop",
    "Stopped",
    "TextSpan",
    "Token",
    "Unit",
]
__version__ = "0.1.0"
