"""Shared fixtures: tiny random models (built from configs, no hub) and exports made once per test session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Alice met Bob in the garden, and Bob gave Alice a red apple.",
    "Numbers: one two three four five six seven eight nine ten.",
]
ARCHS = ("gpt2", "llama")
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>\n{% endif %}"
)
MODES = ("log_additive", "multiplicative")


WINDOW = 8  # sliding windows of the tiny models: shorter than the test prompts (about 20 tokens)
SLIDING = {"sliding_window": WINDOW}
# model_type -> what its tiny config sets beyond the common sizes: every quirk switched on and made large enough
# to change the numbers (softcaps, multipliers, scalings that differ from head_dim ** -0.5, sliding layers).
FAMILY_CONFIGS = {
    "mistral": SLIDING,
    "qwen2": {**SLIDING, "use_sliding_window": True, "max_window_layers": 1},
    "qwen3": {**SLIDING, "use_sliding_window": True, "max_window_layers": 1, "head_dim": 16},
    "qwen3_moe": {
        **SLIDING,
        "use_sliding_window": True,
        "head_dim": 16,
        "moe_intermediate_size": 32,
        "num_experts": 4,
        "num_experts_per_tok": 2,
    },
    "mixtral": {**SLIDING, "num_local_experts": 4, "num_experts_per_tok": 2},
    "gemma": {"head_dim": 16},
    "gemma2": {
        **SLIDING,
        "head_dim": 16,
        "query_pre_attn_scalar": 10,
        "attn_logit_softcapping": 1.0,
        "final_logit_softcapping": 2.0,
    },
    "gemma3_text": {
        **SLIDING,
        "head_dim": 16,
        "query_pre_attn_scalar": 10,
        "final_logit_softcapping": 3.0,
        "layer_types": ["sliding_attention", "full_attention"],
    },
    "phi3": SLIDING,
    "phi": {},
    "smollm3": {**SLIDING, "use_sliding_window": True, "no_rope_layers": [1, 0]},
    "granite": {
        "attention_multiplier": 0.3,
        "logits_scaling": 2.0,
        "embedding_multiplier": 3.0,
        "residual_multiplier": 0.5,
    },
    "olmo2": {},
    "stablelm": {},
    "gpt_neox": {},
    "starcoder2": SLIDING,
    "gptj": {"rotary_dim": 8},
}
FAMILIES = ("gpt2", "llama", *FAMILY_CONFIGS)


def tiny_config(arch: str, vocab_size: int):
    """A small random config; Llama uses grouped-query attention (4 query heads over 2 key/value heads), and so
    does every other family that has key/value heads.

    Weights are drawn wider than the default (std 0.1, not 0.02) so that attention is peaked enough for
    suppression to move the log-probs measurably.
    """
    from transformers import AutoConfig, GPT2Config, LlamaConfig

    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=128, initializer_range=0.1)
    if arch == "llama":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            initializer_range=0.1,
        )
    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        initializer_range=0.1,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    config = AutoConfig.for_model(arch, **common, **FAMILY_CONFIGS[arch])
    if hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = 2
    return config


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer trained on a few sentences, as a transformers fast tokenizer (also the
    conformance kit's: tools/conformance.py)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The tiny tokenizer, trained once per session."""
    pytest.importorskip("transformers", reason="the tiny models need the export extra (transformers)")
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def runtime_model():
    """Factory: mode -> the conformance kit's committed tiny Llama in that mode (tiny_export('llama', mode)'s model,
    regenerated by tools/conformance.py), so that the runtime's tests need no torch."""
    return lambda mode: Path(__file__).resolve().parents[1] / "conformance" / "models" / f"llama-{mode}"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """Factory: arch -> a saved Hugging Face folder with a tiny random model and the tiny tokenizer."""
    pytest.importorskip("torch", reason="building a model needs the export extra (torch)")
    import torch
    from transformers import AutoModelForCausalLM

    made: dict[str, Path] = {}

    def make(arch: str) -> Path:
        if arch not in made:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tiny_tokenizer)))
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            model.save_pretrained(folder)
            tiny_tokenizer.save_pretrained(folder)
            made[arch] = folder
        return made[arch]

    return make


def exports(tmp_path_factory, model_dir):
    """Factory: (name, mode) -> ``model_dir(name)`` exported, once per session."""
    from atman_onnx.export.exporter import export

    made: dict[tuple[str, str], Path] = {}

    def make(name: str, mode: str) -> Path:
        if (name, mode) not in made:
            out = tmp_path_factory.mktemp(f"onnx-{name}-{mode}")
            export(str(model_dir(name)), out, mode=mode)
            made[name, mode] = out
        return made[name, mode]

    return make


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_model_dir):
    """Factory: (arch, mode) -> an exported folder, exported once per session."""
    return exports(tmp_path_factory, tiny_model_dir)


@pytest.fixture(scope="session")
def smollm2_export(tmp_path_factory):
    """Factory: mode -> SmolLM2-135M-Instruct exported from the bundled GGUF (converted and cached once)."""
    from atman_onnx.export.exporter import export

    made: dict[str, Path] = {}

    def make(mode: str) -> Path:
        if mode not in made:
            out = tmp_path_factory.mktemp(f"smollm2-{mode}")
            export("bundled:smollm2", out, mode=mode)
            made[mode] = out
        return made[mode]

    return make


@pytest.fixture(scope="session")
def smollm2_torch():
    """The float32 SmolLM2 torch model, loaded from the same cached conversion the export used."""
    from atman_onnx.export import source

    model, _ = source.load("bundled:smollm2")
    return model


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_light_export(tmp_path_factory, tiny_model_dir):
    """Factory: (arch, precision) -> a tiny model exported (log_additive) at 'fp16', 'int8' or 'int8-dynamic', once
    per session."""
    from atman_onnx.export.exporter import export

    made: dict[tuple[str, str], Path] = {}

    def make(arch: str, precision: str) -> Path:
        if (arch, precision) not in made:
            out = tmp_path_factory.mktemp(f"onnx-{arch}-{precision}")
            dtype, quantize = ("fp16", None) if precision == "fp16" else ("fp32", precision)
            export(str(tiny_model_dir(arch)), out, mode="log_additive", dtype=dtype, quantize=quantize)
            made[arch, precision] = out
        return made[arch, precision]

    return make


IMAGE_TOKENS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *[f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)],
]
TILE = 64  # pixels per tile side of the tiny image-text models: 8 x 8 patches of 8 pixels, 16 image tokens per tile


def tiny_vlm(model_type: str, tokenizer):
    """(model, image processor): a tiny random Idefics3 or SmolVLM, Llama text model (as tiny_config's) with a
    vision tower of 64-pixel tiles, and an image processor that resizes images to at most 128 pixels (up to 2 x 2
    tiles)."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForImageTextToText,
        Idefics3ImageProcessorPil,
        SmolVLMImageProcessorPil,
    )

    torch.manual_seed(0)
    text = tiny_config("llama", len(tokenizer)).to_dict()
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TILE,
        patch_size=8,
        initializer_range=0.1,
    )
    config = AutoConfig.for_model(
        model_type,
        text_config=text,
        vision_config=vision,
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = AutoModelForImageTextToText.from_config(config).eval()
    sizes = dict(size={"longest_edge": 2 * TILE}, max_image_size={"longest_edge": TILE})
    pil = Idefics3ImageProcessorPil if model_type == "idefics3" else SmolVLMImageProcessorPil
    return model, pil(**sizes)


def save_tiny_vlm(model_type: str, tokenizer, folder: Path):
    """Save ``tiny_vlm(model_type)`` into ``folder`` as a hub checkpoint has it: the model, ``tokenizer`` plus the
    image tokens, the image processor and the processor's image_seq_len; the model, for a reference."""
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    model, image_processor = tiny_vlm(model_type, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    processor = {"idefics3": "Idefics3Processor", "smolvlm": "SmolVLMProcessor"}[model_type]
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": processor, "image_seq_len": 16}))
    return model


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory, tiny_tokenizer):
    """Factory: model_type ('idefics3', 'smolvlm') -> a saved folder with a tiny random image-text model, the tiny
    tokenizer plus the image tokens, its image processor and the processor's image_seq_len (what a hub checkpoint
    has; SmolVLM's full processor needs torchvision, for videos)."""
    import copy

    made: dict[str, Path] = {}

    def make(model_type: str) -> Path:
        if model_type not in made:
            folder = tmp_path_factory.mktemp(f"tiny-{model_type}")
            save_tiny_vlm(model_type, copy.deepcopy(tiny_tokenizer), folder)
            made[model_type] = folder
        return made[model_type]

    return make


@pytest.fixture(scope="session")
def tiny_vlm_export(tmp_path_factory, tiny_vlm_dir):
    """Factory: (model_type, mode) -> an exported tiny image-text model, once per session."""
    return exports(tmp_path_factory, tiny_vlm_dir)


@pytest.fixture(scope="session")
def cluster():
    """One local Ray instance of 2 CPUs for the session (test_ray.py, test_ray_serve.py), started by ``connect`` as
    the command line does; each file gives back the CPUs it took."""
    ray = pytest.importorskip("ray")
    from atman_onnx.cluster.executor import connect

    connect("local", num_cpus=2)
    yield
    ray.shutdown()


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own browser downloads are never used


@pytest.fixture(scope="module")
def browser():
    """The system Chromium, headless, driven by Playwright; skipped without it. One per test file, not per session:
    the sync API marks its asyncio loop as running in this thread while it lives, which breaks ``asyncio.run``."""
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed at /usr/bin/chromium (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page, in a context of its own, for one test."""
    context = browser.new_context()
    yield context.new_page()
    context.close()
