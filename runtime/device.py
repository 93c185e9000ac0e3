"""What a CUDA device tells the planner, and the copies a plan's keys and values need there, without PyTorch.

Both go through the CUDA runtime that onnxruntime's CUDA provider loaded into this process (``libcudart``, called
through ctypes); the free memory falls back to NVML (``nvidia-ml-py``) where that is installed. Everything fails
soft: where nothing answers, ``free_memory_mb`` is None and ``copier`` is None, and the caller keeps its host-side
defaults.

A ``Copier`` moves rectangles of bytes (``height`` rows of ``width`` bytes, each with its own pitch) within one
device's memory: on CUDA with ``cudaMemcpy2D``, on the CPU with ``memmove``, so that the same code path, and its
offsets, run in the tests on a machine without a GPU.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

log = logging.getLogger("atman_onnx")

FREE_SHARE = 0.8  # of a GPU's free memory, what one graph call's activations may take (the rest: arena slack)
CUDART_NAMES = ("libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so")
MEMCPY_DEFAULT = 4  # cudaMemcpyDefault: the direction follows from the pointers (unified addressing)

_cudart: ctypes.CDLL | None = None
_lock = threading.Lock()


def _loaded_cudart_paths() -> list[str]:
    """Paths of the CUDA runtime libraries mapped into this process (Linux), the ones onnxruntime loaded."""
    try:
        with open("/proc/self/maps") as maps:
            found = {line.split()[-1] for line in maps if "libcudart.so" in line and "/" in line}
    except OSError:
        return []
    return sorted(found)


def cudart() -> ctypes.CDLL | None:
    """The CUDA runtime already loaded into this process (by onnxruntime's CUDA provider), or None. It is never
    loaded here: only the runtime that onnxruntime itself uses is asked (none where its provider did not load)."""
    global _cudart
    with _lock:
        if _cudart is None:
            _cudart = _find_cudart()
        return _cudart


def _find_cudart() -> ctypes.CDLL | None:
    no_load = getattr(os, "RTLD_NOLOAD", None)
    tries = [(path, ctypes.DEFAULT_MODE) for path in _loaded_cudart_paths()]  # loaded already: the same handle
    if no_load is not None:  # else (not Linux): only what /proc/self/maps named
        tries += [(name, no_load | os.RTLD_LAZY) for name in CUDART_NAMES]
    for name, mode in tries:
        try:
            library = ctypes.CDLL(name, mode=mode)
            library.cudaMemGetInfo  # noqa: B018  (a CUDA runtime, not a namesake)
        except (OSError, AttributeError):
            continue
        return library
    return None


class _OnDevice:
    """Makes ``device_id`` the calling thread's current CUDA device for a while, then restores the previous one."""

    def __init__(self, library: ctypes.CDLL, device_id: int):
        self.library, self.device_id, self.previous = library, device_id, ctypes.c_int(-1)

    def __enter__(self) -> None:
        self.library.cudaGetDevice(ctypes.byref(self.previous))
        if self.previous.value != self.device_id:
            _check(self.library.cudaSetDevice(self.device_id), "cudaSetDevice")

    def __exit__(self, *exc_info: object) -> None:
        if self.previous.value not in (-1, self.device_id):
            self.library.cudaSetDevice(self.previous.value)


def _check(code: int, call: str) -> None:
    if code != 0:
        raise RuntimeError(f"{call} failed with CUDA error {code}")


def _free_from_cudart(device_id: int) -> float | None:
    library = cudart()
    if library is None:
        return None
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    try:
        with _OnDevice(library, device_id):
            _check(library.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)), "cudaMemGetInfo")
    except (RuntimeError, OSError):
        return None
    return free.value / 2**20


def _nvml_handle(pynvml, device_id: int):
    """NVML's handle of CUDA device ``device_id``: NVML counts every GPU, CUDA only the visible ones."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible:
        return pynvml.nvmlDeviceGetHandleByIndex(device_id)
    named = visible[device_id]
    if named.isdigit():
        return pynvml.nvmlDeviceGetHandleByIndex(int(named))
    return pynvml.nvmlDeviceGetHandleByUUID(named)


def _free_from_nvml(device_id: int) -> float | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetMemoryInfo(_nvml_handle(pynvml, device_id)).free / 2**20
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # (no driver, no such device, an index CUDA_VISIBLE_DEVICES does not name)
        return None


def free_memory_mb(device_id: int = 0) -> float | None:
    """Free memory of CUDA device ``device_id`` in MiB: from the CUDA runtime onnxruntime loaded, else from NVML;
    None where neither answers."""
    free = _free_from_cudart(device_id)
    return free if free is not None else _free_from_nvml(device_id)


def budget_mb(free_mb: float | None) -> float | None:
    """What one graph call's activations may take on a device with ``free_mb`` free: ``FREE_SHARE`` of it."""
    return None if free_mb is None else FREE_SHARE * free_mb


class Copier:
    """Copies ``height`` rows of ``width`` bytes from ``src`` (rows ``src_pitch`` bytes apart) to ``dst`` (rows
    ``dst_pitch`` apart), all addresses in one device's memory; ``copier`` makes one."""

    def __init__(self, device: str, device_id: int = 0, library: ctypes.CDLL | None = None):
        self.device, self.device_id, self.library = device, device_id, library

    def copy(self, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, height: int) -> None:
        if width == 0 or height == 0:
            return
        if self.library is None:  # host memory
            for row in range(height):
                ctypes.memmove(dst + row * dst_pitch, src + row * src_pitch, width)
            return
        with _OnDevice(self.library, self.device_id):
            code = self.library.cudaMemcpy2D(
                ctypes.c_void_p(dst),
                ctypes.c_size_t(dst_pitch),
                ctypes.c_void_p(src),
                ctypes.c_size_t(src_pitch),
                ctypes.c_size_t(width),
                ctypes.c_size_t(height),
                ctypes.c_int(MEMCPY_DEFAULT),
            )
            _check(code, "cudaMemcpy2D")

    def synchronize(self) -> None:
        """Wait for the copies (and anything else queued on the device): a copy within device memory returns
        before it completes, and onnxruntime's stream does not wait for the default stream."""
        if self.library is not None:
            with _OnDevice(self.library, self.device_id):
                _check(self.library.cudaDeviceSynchronize(), "cudaDeviceSynchronize")


def copier(device: str, device_id: int = 0) -> Copier | None:
    """A ``Copier`` for ``device`` ('cpu', 'cuda'); None on CUDA where no CUDA runtime is loaded."""
    if device == "cpu":
        return Copier("cpu")
    library = cudart()
    return None if library is None else Copier(device, device_id, library)
