"""An ONNX Runtime session over an exported graph, with provider choice and IO binding.

Providers are tried in order of preference (CUDA, then CPU); ``provider=`` forces one. onnxruntime-gpu imports on
machines without CUDA libraries and then logs a loud error when the CUDA provider fails to load: that log is held
back and the fallback is reported in one line instead (``Graph.provider_note``). Every run goes through IO binding,
so on CUDA the inputs and outputs stay on the device and only the requested outputs are copied back.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from atman_onnx.core.contract import (
    EMBEDDINGS_FILE,
    GRAPH_FILE,
    Manifest,
    load_manifest,
    past_names,
    present_names,
    row_past_names,
)
from atman_onnx.core.errors import ProviderError

log = logging.getLogger("atman_onnx")

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
DEVICE_TYPE = {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}
# AtMan measures small differences of log-probs: float32 matmuls stay float32 on the GPU (no TF32 tensor cores).
PROVIDER_OPTIONS = {"CUDAExecutionProvider": {"use_tf32": "0"}}


def _preload_cuda_libraries() -> None:
    """Let onnxruntime find CUDA/cuDNN installed from PyPI (the ``[cuda,cudnn]`` extras), quietly."""
    if importlib.util.find_spec("nvidia") is not None and hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()):
            ort.preload_dlls()


def _create(path: Path, providers: list[str], threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    ort.set_default_logger_severity(4)  # hold back the provider-bridge error; we report the fallback ourselves
    try:
        with_options = [(name, PROVIDER_OPTIONS.get(name, {})) for name in providers]
        return ort.InferenceSession(str(path), options, providers=with_options)
    finally:
        ort.set_default_logger_severity(2)


def open_session(
    path: Path, provider: str | None = None, threads: int | None = None
) -> tuple[ort.InferenceSession, str]:
    """Create a session on ``provider`` ('cuda', 'cpu') or the best available; returns it and a one-line note."""
    if provider is not None and provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r}; available: {', '.join(PROVIDERS)}")
    available = ort.get_available_providers()
    wanted = [PROVIDERS[provider]] if provider else [p for p in PROVIDERS.values() if p in available]
    if PROVIDERS["cuda"] in wanted:
        if PROVIDERS["cuda"] not in available:
            raise ProviderError("provider 'cuda' needs onnxruntime-gpu; this onnxruntime offers: " + ", ".join(available))
        _preload_cuda_libraries()
    session = _create(path, wanted + ([] if PROVIDERS["cpu"] in wanted else [PROVIDERS["cpu"]]), threads)
    used = session.get_providers()[0]
    if provider and used != PROVIDERS[provider]:
        raise ProviderError(
            f"provider {provider!r} could not be loaded (CUDA 12/13 and cuDNN 9 libraries not found; "
            "`pip install onnxruntime-gpu[cuda,cudnn]` brings them)"
        )
    if used == PROVIDERS["cuda"]:
        note = "provider: cuda (CUDAExecutionProvider, IO binding on the GPU)"
    elif PROVIDERS["cuda"] in wanted:
        note = "provider: cpu (the CUDA provider could not load its CUDA/cuDNN libraries; fell back to CPU)"
    elif provider == "cpu":
        note = "provider: cpu (requested)"
    else:
        note = "provider: cpu (this onnxruntime has no CUDA provider)"
    return session, note


class Graph:
    """An exported folder ready to run: manifest, session, and IO-bound calls to the graph."""

    def __init__(self, folder: str | Path, provider: str | None = None, threads: int | None = None):
        self.folder = Path(folder)
        self.manifest: Manifest = load_manifest(self.folder)
        self.session, self.provider_note = open_session(self.folder / GRAPH_FILE, provider, threads)
        self.device = DEVICE_TYPE[self.session.get_providers()[0]]
        layers = self.manifest.dims["num_layers"]
        self.past_names, self.present_names = past_names(layers), present_names(layers)
        self.row_past_names = row_past_names(layers) if self.manifest.row_cache else []
        # a graph that takes input embeddings (contract version 2) looks token ids up in the text embedding matrix
        self.embeddings = np.load(self.folder / EMBEDDINGS_FILE, mmap_mode="r") if self.manifest.takes_embeds else None
        log.info(self.provider_note)

    def empty_past(self, batch: int = 1) -> list[np.ndarray]:
        """A cache of length 0 (of ``batch`` rows): the call then runs over the whole sequence."""
        shape = (batch, self.manifest.dims["kv_heads"], 0, self.manifest.dims["head_dim"])
        return [np.zeros(shape, dtype=np.float32) for _ in self.past_names]

    def embed(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Input embeddings [..., hidden] of token ids, from the text embedding matrix of a graph that takes
        embeddings (contract version 2)."""
        return np.ascontiguousarray(self.embeddings[np.asarray(ids, dtype=np.int64)], dtype=np.float32)

    def first_input(self, inputs: np.ndarray) -> tuple[str, np.ndarray]:
        """The graph's first input for ``inputs``: token ids [batch, seq] (looked up in the embedding matrix when
        the graph takes embeddings) or input embeddings [batch, seq, hidden]."""
        if inputs.ndim == 3:
            return "inputs_embeds", np.ascontiguousarray(inputs, dtype=np.float32)
        if self.embeddings is not None:
            return "inputs_embeds", self.embed(inputs)
        return "input_ids", np.ascontiguousarray(inputs, dtype=np.int64)

    def run(
        self,
        inputs: np.ndarray,
        attention_scale: np.ndarray,
        label_positions: np.ndarray,
        labels: np.ndarray,
        past: list[np.ndarray] | None = None,
        outputs: tuple[str, ...] = ("label_logprobs",),
        run_options: ort.RunOptions | None = None,
        rows: list[np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """One call of the graph on a batch of new tokens (ids or embeddings, see ``first_input``), on top of
        ``past`` (keys and values shared by every row) and ``rows`` (each row's own keys and values after them;
        graphs with a row cache only): together the first ``attention_scale.shape[1] - inputs.shape[1]``
        positions. Returns the requested outputs. ``run_options`` lets another thread end the call
        (``terminate``)."""
        name, first = self.first_input(np.asarray(inputs))
        feeds = {
            name: first,
            "attention_mask": np.ones(attention_scale.shape, dtype=np.int64),
            "attention_scale": np.ascontiguousarray(attention_scale, dtype=np.float32),
            "label_positions": np.ascontiguousarray(label_positions, dtype=np.int64),
            "labels": np.ascontiguousarray(labels, dtype=np.int64),
        }
        cache = self.empty_past() if past is None else past
        feeds.update((name, np.ascontiguousarray(a, dtype=np.float32)) for name, a in zip(self.past_names, cache))
        if self.row_past_names:
            own = self.empty_past(len(first)) if rows is None else rows
            feeds.update((n, np.ascontiguousarray(a, dtype=np.float32)) for n, a in zip(self.row_past_names, own))
        elif rows is not None:
            raise ValueError("this graph takes no row cache (contract version 1 or 2)")
        binding = self.session.io_binding()
        for name, array in feeds.items():
            if self.device == "cpu":
                binding.bind_cpu_input(name, array)
            else:
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, self.device, 0))
        for name in outputs:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding, run_options)
        return dict(zip(outputs, binding.copy_outputs_to_cpu()))
