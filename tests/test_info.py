"""``atman-onnx info`` (text and JSON), and what the command line says about providers on each build of ONNX Runtime.

The builds are simulated in this process: onnxruntime's list of providers and the installed distributions are
replaced, so the CPU build, the GPU build without its CUDA libraries, and the GPU build with the CPU build installed
over it (what one ``pip install "atman-onnx[gpu]"`` leaves) are each checked here, whichever build is installed.
``tests/test_runtime_install.py`` checks the real CPU build, in a fresh virtualenv.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import onnxruntime as ort
import pytest

from atman_onnx import Explainer
from atman_onnx.cli import main
from atman_onnx.core.errors import ProviderError
from atman_onnx.info import EXTRA_MODULES, gather, probe_model
from atman_onnx.runtime import providers as ort_providers

PROMPT, TARGET = "The dog met the fox", " in the garden"
CPU, CUDA = ort_providers.PROVIDERS["cpu"], ort_providers.PROVIDERS["cuda"]
RESTORE = "pip install --force-reinstall --no-deps onnxruntime-gpu==1.31.1"


def simulate(monkeypatch, providers: list[str], builds: dict[str, str]) -> None:
    """This onnxruntime offers ``providers``, and ``builds`` are the ONNX Runtime distributions installed."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(providers))
    monkeypatch.setattr(ort_providers, "installed_builds", lambda: dict(builds))


@pytest.fixture
def cpu_build(monkeypatch):
    simulate(monkeypatch, [CPU], {"onnxruntime": ort.__version__})


@pytest.fixture
def shadowed_gpu_build(monkeypatch):
    simulate(monkeypatch, [CPU], {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.31.1"})


@pytest.fixture
def gpu_build_without_cuda(monkeypatch):
    if ort_providers.provider_loads(CUDA, probe_model()):
        pytest.skip("the CUDA provider loads here")
    simulate(monkeypatch, [CUDA, CPU], {"onnxruntime-gpu": "1.31.1"})


@pytest.fixture
def folder(tiny_export, capsys):
    """A tiny exported model; what exporting it printed is dropped."""
    made = tiny_export("llama", "log_additive")
    capsys.readouterr()
    return made


def explain(folder, *options: str) -> int:
    return main(["explain", str(folder), "--prompt", PROMPT, "--target", TARGET, *options])


def test_info_text(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ATMAN_ONNX_CACHE", str(tmp_path / "cache"))
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    labels = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert labels[:2] == ["atman-onnx", "onnxruntime"] and {"providers", "extras", "cache"} <= set(labels)
    assert lines[0].split()[1] == importlib.metadata.version("atman-onnx")
    assert lines[1].split()[1] == ort.__version__
    assert any(line.split()[-2:] == [f"{CPU}:", "loads"] for line in lines)
    cache = next(line for line in lines if line.startswith("cache"))
    assert str(tmp_path / "cache") in cache and "$ATMAN_ONNX_CACHE" in cache and "not created yet" in cache


def test_info_json(monkeypatch, capsys, tmp_path):
    from atman_onnx.export.source import cache_dir

    monkeypatch.setenv("ATMAN_ONNX_CACHE", str(tmp_path))
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["atman_onnx"] == importlib.metadata.version("atman-onnx")
    runtime = info["onnxruntime"]
    assert runtime["version"] == ort.__version__ and runtime["distribution"] in runtime["installed"]
    assert [p["name"] for p in info["providers"]] == ort.get_available_providers()
    assert {"name": CPU, "loads": True} in info["providers"]
    assert set(info["extras"]) == {"gpu", *EXTRA_MODULES}
    for extra, modules in EXTRA_MODULES.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        assert info["extras"][extra] == {"installed": not missing, "missing": missing}
    assert info["cache"] == {"path": str(tmp_path), "env": "ATMAN_ONNX_CACHE", "from_env": True, "exists": True}
    assert info["cache"]["path"] == str(cache_dir())  # the export code's cache, where converted models go


def test_info_on_the_cpu_build(cpu_build):
    info = gather()
    assert info["onnxruntime"]["distribution"] == "onnxruntime" and info["onnxruntime"]["problem"] is None
    assert info["providers"] == [{"name": CPU, "loads": True}]
    assert info["extras"]["gpu"] == {"installed": False, "missing": ["onnxruntime-gpu"]}


def test_info_names_the_fix_for_a_shadowed_gpu_build(shadowed_gpu_build, capsys):
    info = gather()
    assert info["onnxruntime"]["distribution"] == "onnxruntime"
    assert info["onnxruntime"]["fix"] == RESTORE and "installed over" in info["onnxruntime"]["problem"]
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"fix            {RESTORE}" in out and "also installed: onnxruntime-gpu 1.31.1" in out


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_info_names_the_cuda_libraries(gpu_build_without_cuda):
    info = gather()
    assert {"name": CUDA, "loads": False} in info["providers"]
    assert info["onnxruntime"]["fix"] == 'pip install "onnxruntime-gpu[cuda,cudnn]==1.31.1"'


def test_cpu_build_prints_no_provider_line(cpu_build, folder, capsys):
    for options in [(), ("--provider", "cpu")]:
        assert explain(folder, *options) == 0
        done = capsys.readouterr()
        assert "most relevant prompt tokens" in done.out
        assert done.err == ""


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_gpu_build_without_cuda_falls_back_in_one_line(gpu_build_without_cuda, folder, capsys):
    assert explain(folder) == 0
    assert capsys.readouterr().err == (
        "provider: cpu (the CUDA provider could not load its CUDA/cuDNN libraries; fell back to CPU)\n"
    )


def test_shadowed_gpu_build_says_how_to_restore_it(shadowed_gpu_build, folder, capsys):
    assert explain(folder) == 0
    err = capsys.readouterr().err
    assert err.startswith("provider: cpu (") and f"`{RESTORE}` restores CUDA" in err and err.count("\n") == 1


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("atman-onnx: error: provider 'cuda'"), err
    return err


def test_provider_cuda_on_the_cpu_build_says_what_to_install(cpu_build, folder, capsys):
    assert explain(folder, "--provider", "cuda") == 2
    err = one_line_error(capsys)
    assert 'run `pip install "atman-onnx[gpu]"`' in err and '`pip install "onnxruntime-gpu[cuda,cudnn]"`' in err


def test_provider_cuda_on_a_shadowed_gpu_build_says_how_to_restore_it(shadowed_gpu_build, folder, capsys):
    with pytest.raises(ProviderError, match="onnxruntime-gpu 1.31.1 is installed, but the CPU build"):
        Explainer.load(folder, provider="cuda")
    assert explain(folder, "--provider", "cuda") == 2
    assert one_line_error(capsys).endswith(f"run `{RESTORE}`\n")


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_provider_cuda_without_its_libraries_says_what_to_install(gpu_build_without_cuda, folder, capsys):
    assert explain(folder, "--provider", "cuda") == 2
    assert '`pip install "onnxruntime-gpu[cuda,cudnn]==1.31.1"` brings the libraries' in one_line_error(capsys)
