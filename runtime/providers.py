"""ONNX Runtime's builds and execution providers: which are installed and load here, and a session on the best one.

Providers are tried in order of preference (CUDA, then CPU); ``provider=`` forces one. onnxruntime-gpu imports on
machines without CUDA libraries and then logs a loud error when the CUDA provider fails to load: that log is held
back and the fallback is reported in one line instead (``open_session``'s note).

The base install brings the CPU build (``onnxruntime``), ``atman-onnx[gpu]`` adds ``onnxruntime-gpu``; both install
one ``onnxruntime`` folder, so where pip put the CPU build's files over the GPU build's, the errors and notes here
name the one command that restores it (``restore_gpu_build``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
from pathlib import Path

import onnxruntime as ort

from atman_onnx.core.errors import ProviderError

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
DEVICE_TYPE = {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}
# AtMan measures small differences of log-probs: float32 matmuls stay float32 on the GPU (no TF32 tensor cores).
PROVIDER_OPTIONS = {"CUDAExecutionProvider": {"use_tf32": "0"}}
# Builds of ONNX Runtime on PyPI: each installs the same `onnxruntime` module. The base install brings the CPU one.
ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-rocm",
)
GPU_DISTRIBUTION = "onnxruntime-gpu"
GPU_INSTALL = 'pip install "atman-onnx[gpu]"'


def preload_cuda_libraries() -> None:
    """Let onnxruntime find CUDA/cuDNN installed from PyPI (the ``[cuda,cudnn]`` extras), quietly."""
    if importlib.util.find_spec("nvidia") is not None and hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()):
            ort.preload_dlls()


def create_session(model: Path | bytes, providers: list[str], threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    ort.set_default_logger_severity(4)  # hold back the provider-bridge error; we report the fallback ourselves
    try:
        with_options = [(name, PROVIDER_OPTIONS.get(name, {})) for name in providers]
        source = model if isinstance(model, bytes) else str(model)
        return ort.InferenceSession(source, options, providers=with_options)
    finally:
        ort.set_default_logger_severity(2)


def installed_builds() -> dict[str, str]:
    """The ONNX Runtime distributions installed here and their versions. They all install one ``onnxruntime``
    folder, so where two are installed the files of whichever pip installed last are the ones imported."""
    found = {}
    for name in ORT_DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def cuda_offered() -> bool:
    """Whether this onnxruntime is a build with the CUDA provider (it may still fail to load its libraries)."""
    return PROVIDERS["cuda"] in ort.get_available_providers()


def restore_gpu_build() -> str | None:
    """Where onnxruntime-gpu is installed but a CPU build's files lie over it (``pip install "atman-onnx[gpu]"`` in
    one go installs onnxruntime-gpu, then onnxruntime over it), the command that puts the GPU build back; else None."""
    gpu = None if cuda_offered() else installed_builds().get(GPU_DISTRIBUTION)
    return None if gpu is None else f"pip install --force-reinstall --no-deps {GPU_DISTRIBUTION}=={gpu}"


def gpu_expected() -> bool:
    """Whether this installation is meant for a GPU: its onnxruntime offers the CUDA provider, or onnxruntime-gpu is
    installed under a CPU build. The command line names the provider only then, never on a plain CPU install."""
    return cuda_offered() or GPU_DISTRIBUTION in installed_builds()


def cuda_libraries_hint() -> str:
    """The command that brings the CUDA and cuDNN libraries this onnxruntime-gpu was built for, from PyPI."""
    return f'pip install "{GPU_DISTRIBUTION}[cuda,cudnn]=={installed_builds().get(GPU_DISTRIBUTION, ort.__version__)}"'


def no_cuda_provider() -> str:
    """Why ``provider='cuda'`` cannot run here, when this onnxruntime has no CUDA provider, and what to run."""
    restore = restore_gpu_build()
    if restore:
        gpu = installed_builds()[GPU_DISTRIBUTION]
        return (
            f"provider 'cuda': onnxruntime-gpu {gpu} is installed, but the CPU build of onnxruntime "
            f"{ort.__version__} was installed over the same files; run `{restore}`"
        )
    return (
        f"provider 'cuda' needs the GPU build of ONNX Runtime (this onnxruntime {ort.__version__} offers "
        f"{', '.join(ort.get_available_providers())}): run `{GPU_INSTALL}`, and for CUDA and cuDNN from PyPI "
        f'`pip install "{GPU_DISTRIBUTION}[cuda,cudnn]"`'
    )


def provider_loads(name: str, model: Path | bytes) -> bool:
    """Whether execution provider ``name`` (e.g. 'CUDAExecutionProvider') loads for ``model`` here: a CUDA provider
    does only where its libraries and a device are found."""
    if name == PROVIDERS["cuda"]:
        preload_cuda_libraries()
    fallback = [] if name == PROVIDERS["cpu"] else [PROVIDERS["cpu"]]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime prints its own fallback (TensorRT's) there
            return create_session(model, [name, *fallback], 1).get_providers()[0] == name
    except Exception:  # a provider that fails in its own way (a library, an option, a device) does not load here
        return False


def open_session(
    path: Path, provider: str | None = None, threads: int | None = None
) -> tuple[ort.InferenceSession, str]:
    """Create a session on ``provider`` ('cuda', 'cpu') or the best available; returns it and a one-line note (the
    command line prints it only where ``gpu_expected()``)."""
    if provider is not None and provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r}; available: {', '.join(PROVIDERS)}")
    available = ort.get_available_providers()
    wanted = [PROVIDERS[provider]] if provider else [p for p in PROVIDERS.values() if p in available]
    if PROVIDERS["cuda"] in wanted:
        if PROVIDERS["cuda"] not in available:
            raise ProviderError(no_cuda_provider())
        preload_cuda_libraries()
    session = create_session(path, wanted + ([] if PROVIDERS["cpu"] in wanted else [PROVIDERS["cpu"]]), threads)
    used = session.get_providers()[0]
    if provider and used != PROVIDERS[provider]:
        raise ProviderError(
            f"provider {provider!r} could not be loaded (its CUDA and cuDNN libraries were not found, or no CUDA "
            f"device): `{cuda_libraries_hint()}` brings the libraries"
        )
    restore = None if used == PROVIDERS["cuda"] or provider else restore_gpu_build()
    if used == PROVIDERS["cuda"]:
        note = "provider: cuda (CUDAExecutionProvider, IO binding on the GPU)"
    elif PROVIDERS["cuda"] in wanted:
        note = "provider: cpu (the CUDA provider could not load its CUDA/cuDNN libraries; fell back to CPU)"
    elif provider == "cpu":
        note = "provider: cpu (requested)"
    elif restore:
        note = f"provider: cpu (onnxruntime-gpu lies under the CPU build of onnxruntime; `{restore}` restores CUDA)"
    else:
        note = "provider: cpu (this onnxruntime has no CUDA provider)"
    return session, note
