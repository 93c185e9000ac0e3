"""``atman-onnx info``: what this installation can do. The versions of atman-onnx and ONNX Runtime, which build of ONNX
Runtime is imported (``onnxruntime`` or ``onnxruntime-gpu``; both install one ``onnxruntime`` folder), its providers
and which of them load here, the extras installed, and the cache folder; ``--json`` for machines.

A provider "loads" when a session of a one-node graph (``probe_model``, written here as protobuf, since the runtime has
no ``onnx`` package) starts on it: the CUDA provider does only where its CUDA and cuDNN libraries and a device are
found. An extra counts as installed when its key modules can be found (``find_spec``: nothing is imported).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
from pathlib import Path
from typing import Any

import onnxruntime as ort

from atman_onnx.runtime import providers as ort_providers

# each extra of pyproject.toml and the modules that show it is installed (`gpu` is a build of onnxruntime instead)
EXTRA_MODULES = {
    "export": ("torch", "transformers", "onnx", "onnxscript"),
    "serve": ("fastapi", "uvicorn", "prometheus_client"),
    "ray": ("ray",),
    "images": ("PIL",),
    "docs": ("mkdocs", "material", "mkdocstrings"),
}
CACHE_ENV = "ATMAN_ONNX_CACHE"


def cache_dir() -> Path:
    """Where converted models are cached; the same rule as ``atman_onnx.export.source.cache_dir`` (which needs the
    export extra's modules nowhere, but lives with the export code)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "atman-onnx"))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes([*out, n])


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (a message, a string)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def probe_model() -> bytes:
    """An ONNX model of one Identity node on a float tensor of shape [1] (IR 8, opset 13), as ModelProto bytes."""
    tensor_type = _int(1, 1) + _field(2, _field(1, _int(1, 1)))  # elem_type FLOAT, shape [dim_value 1]
    value = lambda name: _field(1, name) + _field(2, _field(1, tensor_type))  # ValueInfoProto: name, TypeProto
    node = _field(1, b"x") + _field(2, b"y") + _field(4, b"Identity")  # NodeProto: input, output, op_type
    graph = _field(1, node) + _field(2, b"probe") + _field(11, value(b"x")) + _field(12, value(b"y"))
    return _int(1, 8) + _field(7, graph) + _field(8, _int(2, 13))  # ModelProto: ir_version, graph, opset_import


def _active(builds: dict[str, str]) -> str | None:
    """Which installed distribution's files are the ones imported."""
    if len(builds) <= 1:
        return next(iter(builds), None)
    cuda = ort_providers.cuda_offered()
    if cuda and ort_providers.GPU_DISTRIBUTION in builds:
        return ort_providers.GPU_DISTRIBUTION
    if not cuda and "onnxruntime" in builds:  # the CPU build's files over another build's
        return "onnxruntime"
    return next((name for name, version in builds.items() if version == ort.__version__), None)


def _version() -> str:
    try:
        return importlib.metadata.version("atman-onnx")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def gather() -> dict[str, Any]:
    """Everything ``atman-onnx info`` reports, as JSON-ready data."""
    builds = ort_providers.installed_builds()
    problem = fix = None
    restore = ort_providers.restore_gpu_build()
    probe = probe_model()
    providers = [
        {"name": name, "loads": ort_providers.provider_loads(name, probe)} for name in ort.get_available_providers()
    ]
    if restore:
        problem = "onnxruntime-gpu is installed, but the CPU build of onnxruntime was installed over its files"
        fix = restore
    elif any(p["name"] == ort_providers.PROVIDERS["cuda"] and not p["loads"] for p in providers):
        problem = (
            "the CUDA provider does not load: no CUDA device here, or no CUDA and cuDNN libraries (on a machine "
            "with an NVIDIA GPU, the fix brings them)"
        )
        fix = ort_providers.cuda_libraries_hint()
    gpu = ort_providers.GPU_DISTRIBUTION in builds
    extras: dict[str, dict[str, Any]] = {"gpu": {"installed": gpu, "missing": [] if gpu else ["onnxruntime-gpu"]}}
    for extra, modules in EXTRA_MODULES.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        extras[extra] = {"installed": not missing, "missing": missing}
    cache = cache_dir()
    return {
        "atman_onnx": _version(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "onnxruntime": {
            "version": ort.__version__,
            "distribution": _active(builds),
            "installed": builds,
            "build": ort.get_device(),
            "problem": problem,
            "fix": fix,
        },
        "providers": providers,
        "extras": extras,
        "cache": {"path": str(cache), "env": CACHE_ENV, "from_env": CACHE_ENV in os.environ, "exists": cache.is_dir()},
    }


def render(info: dict[str, Any]) -> str:
    """The report as aligned lines of text."""
    ort_info = info["onnxruntime"]
    others = [f"{name} {v}" for name, v in ort_info["installed"].items() if name != ort_info["distribution"]]
    lines = [
        ("atman-onnx", f"{info['atman_onnx']} (Python {info['python']}, {info['platform']})"),
        (
            "onnxruntime",
            f"{ort_info['version']} from {ort_info['distribution'] or 'an unknown distribution'} "
            f"({ort_info['build']} build)" + (f"; also installed: {', '.join(others)}" if others else ""),
        ),
    ]
    if ort_info["problem"]:
        lines += [("problem", ort_info["problem"]), ("fix", ort_info["fix"])]
    for i, p in enumerate(info["providers"]):
        lines.append(("providers" if i == 0 else "", f"{p['name']}: {'loads' if p['loads'] else 'does not load'}"))
    extras = info["extras"].items()
    lines.append(("extras", ", ".join(name for name, e in extras if e["installed"]) or "none"))
    absent = [f"{name} (no {', '.join(e['missing'])})" for name, e in extras if not e["installed"]]
    lines.append(("not installed", "; ".join(absent) or "none"))
    cache = info["cache"]
    where = f"${cache['env']}" if cache["from_env"] else f"set ${cache['env']} to move it"
    state = "exists" if cache["exists"] else "not created yet"
    lines.append(("cache", f"{cache['path']} (converted models; {where}; {state})"))
    width = max(len(label) for label, _ in lines) + 2
    return "\n".join(f"{label:<{width}}{text}".rstrip() for label, text in lines)


def run(args: argparse.Namespace) -> None:
    info = gather()
    print(json.dumps(info, indent=2) if args.json else render(info))


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``atman-onnx info [--json]``, on the command line's subcommands."""
    cmd = commands.add_parser("info", help="versions, ONNX Runtime's build and providers, extras, cache folder")
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    cmd.set_defaults(run=run)
