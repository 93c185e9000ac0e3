"""Image-text models (Idefics3, SmolVLM) on tiny random models: both graphs against PyTorch, the runtime's
relevance per region, tile and image token against the PyTorch reference (the whole model, from pixels), and the
contract's two versions side by side."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from atman_onnx import Explainer, ExplainRequest
from atman_onnx.core.contract import EMBEDS_CONTRACT_VERSION, load_manifest
from atman_onnx.core.errors import InputError
from atman_onnx.runtime.encode import encode_target

MODEL_TYPES = ("idefics3", "smolvlm")
PROMPT, TARGET = "The dog <image> met the fox in the", " garden"


def png(width: int, height: int, seed: int = 0) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def torch_model(tiny_vlm_dir):
    from transformers import AutoModelForImageTextToText

    made = {}

    def load(model_type: str):
        if model_type not in made:
            made[model_type] = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir(model_type)).eval()
        return made[model_type]

    return load


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_export_writes_two_validated_graphs(tiny_vlm_export, model_type):
    folder = tiny_vlm_export(model_type, "log_additive")
    manifest = load_manifest(folder)
    assert manifest.contract_version == EMBEDS_CONTRACT_VERSION and manifest.model_type == model_type
    assert (
        manifest.architecture == "llama" and "inputs_embeds" in manifest.inputs and "input_ids" not in manifest.inputs
    )
    assert manifest.vision["tokens_per_tile"] == 16 and manifest.vision["tile_size"] == 64
    assert manifest.validation["max_abs_diff"]["label_logprobs"] < 1e-5
    assert manifest.vision["validation"]["max_abs_diff"]["image_features"] < 1e-5
    assert {"vision.onnx", "embeddings.npy", "preprocessor_config.json", "processor_config.json"} <= {
        p.name for p in folder.iterdir()
    }


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_split_pipeline_equals_the_whole_model(tiny_vlm_export, torch_model, model_type):
    """Pixels -> vision graph -> features placed at the image tokens -> decoder graph gives the log-probs of the
    whole PyTorch model run from pixels and ids, as transformers runs it."""
    import torch

    from atman_onnx.runtime.encode import encode_prompt
    from atman_onnx.runtime.image_tiles import preprocess

    explainer = Explainer.load(tiny_vlm_export(model_type, "log_additive"), provider="cpu")
    image = png(150, 100)
    prompt, processed = explainer.vision.prepare(PROMPT, [image])
    ids = encode_prompt(explainer.codec, prompt).ids
    fed = explainer.vision.embed(explainer.graph, ids, processed)
    n = len(ids)
    scale = np.where(np.arange(n) % 3 == 0, 0.3, 1.0).astype(np.float32)
    labels = np.array([[5, 7, 11]])
    at = np.arange(n - 3, n)
    got = explainer.graph.run(fed[None], scale[None], at[None], labels)["label_logprobs"][0]
    model = torch_model(model_type)
    pixels = torch.from_numpy(preprocess([image], explainer.vision.config).pixel_values)[None]
    from atman_onnx.models.patch import patch

    patch(model, "log_additive")
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor([ids]), pixel_values=pixels, atman_scale=torch.from_numpy(scale)[None]
        ).logits[0, at]
    want = torch.log_softmax(logits, -1)[torch.arange(3), torch.from_numpy(labels[0])].numpy()
    assert processed.layouts == [(2, 2)] and (np.asarray(ids) == explainer.vision.image_token_id).sum() == 5 * 16
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
@pytest.mark.parametrize("mode", ["log_additive", "multiplicative"])
def test_relevance_equals_the_reference(tiny_vlm_export, torch_model, model_type, mode):
    from atman_onnx.models.reference import reference_relevance
    from atman_onnx.runtime.image_tiles import preprocess

    explainer = Explainer.load(tiny_vlm_export(model_type, mode), provider="cpu")
    image = png(150, 100, seed=1)
    pixels = preprocess([image], explainer.vision.config).pixel_values
    counts = {}
    for unit, conceptual in (("region", None), ("tile", 0.3), ("token", None)):
        result = explainer.explain(
            PROMPT, TARGET, images=[image], image_units=unit, granularity="word", factor=0.1, conceptual=conceptual
        )
        want = reference_relevance(
            torch_model(model_type),
            mode,
            result.prompt_ids,
            result.target_ids,
            factor=0.1,
            conceptual=conceptual,
            groups=[list(u.positions) for u in result.units],
            pixel_values=pixels,
        )
        assert np.abs(want).max() > 1e-2
        np.testing.assert_allclose(result.relevance, want, atol=1e-5)
        counts[unit] = sum(u.segment == "image" for u in result.units)
    # 2 x 2 tiles and the global image, 16 tokens each: 4 x 4 regions, 5 tiles, 80 tokens
    assert counts == {"region": 16, "tile": 5, "token": 80}


def test_regions_partition_the_image(tiny_vlm_export):
    explainer = Explainer.load(tiny_vlm_export("idefics3", "log_additive"), provider="cpu")
    result = explainer.explain(PROMPT, TARGET, images=[png(150, 100)], grid=2, granularity="word")
    regions = [u for u in result.units if u.segment == "image"]
    assert [(u.box.left, u.box.top, u.box.width, u.box.height) for u in regions] == [
        (0.0, 0.0, 0.5, 0.5),
        (0.5, 0.0, 0.5, 0.5),
        (0.0, 0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5, 0.5),
    ]
    # every image token in exactly one region: 4 split tiles x 16 + the global image's 16
    positions = sorted(p for u in regions for p in u.positions)
    image_positions = [i for i, t in enumerate(result.prompt_ids) if t == explainer.vision.image_token_id]
    assert positions == image_positions and all(len(u.positions) == 20 for u in regions)
    texts = [u.text for u in result.units if u.segment == "prompt"]
    assert texts == ["The", "dog", "met", "the", "fox", "in", "the"]  # no image layout tokens among the text units
    data = json.loads(result.to_json())
    assert data["units"][2]["location"] == {
        "type": "image",
        "image": 0,
        "left": 0.0,
        "top": 0.0,
        "width": 0.5,
        "height": 0.5,
    }
    assert len(data["images"]) == 1


def test_image_tokens_are_counted_per_image(tiny_vlm_export):
    from atman_onnx.runtime.image_layout import token_boxes
    from atman_onnx.runtime.image_tiles import preprocess
    from atman_onnx.runtime.vision import image_units

    config = Explainer.load(tiny_vlm_export("idefics3", "log_additive"), provider="cpu").vision.config
    processed = preprocess([png(150, 100), png(150, 100, seed=1)], config)
    count = len(token_boxes(processed, config)) // 2
    units = image_units(range(2 * count), processed, config, "token")
    assert [u.text for u in units] == [f"image {i}, token {k}" for i in (1, 2) for k in range(1, count + 1)]
    assert [u.positions for u in units] == [(p,) for p in range(2 * count)]


def test_generated_target_and_chat_prompt(tiny_vlm_export):
    explainer = Explainer.load(tiny_vlm_export("smolvlm", "log_additive"), provider="cpu")
    image = png(64, 64)
    result = explainer.explain(
        [{"role": "user", "content": "Look: <image> What is it?"}], images=[image], max_new_tokens=2, image_units="tile"
    )
    # without a marker, the image goes first in the user message, as the models' templates put image parts
    unmarked = explainer.explain(
        [{"role": "user", "content": "What is it?"}], " A", images=[image], image_units="tile", granularity="word"
    )
    assert unmarked.prompt.startswith("<user>\n<fake_token_around_image><row_1_col_1><image>")
    assert [u.text for u in unmarked.units if u.segment == "prompt"] == ["What", "is", "it", "?"]
    assert 1 <= len(result.target_ids) <= 2
    # enlarged to the longest edge (128): 2 x 2 tiles and the global image
    assert [u.text for u in result.units if u.segment == "image"] == [f"image 1, tile {i}" for i in range(1, 6)]
    assert result.units[0].text == "Look" if result.granularity == "word" else result.units[0].segment == "prompt"
    one_token = explainer.codec.tokenizer.decode(encode_target(explainer.codec, TARGET)[:1])
    single = explainer.explain(PROMPT, one_token, images=[image])  # nothing of the target is fed
    assert len(single.target_ids) == 1 and single.relevance.shape == (len(single.units), 1)
    assert np.isfinite(single.relevance).all() and np.abs(single.relevance).max() > 0


def test_bad_image_input_is_named(tiny_vlm_export, tiny_export):
    explainer = Explainer.load(tiny_vlm_export("idefics3", "log_additive"), provider="cpu")
    text_alone = explainer.explain("The dog met the fox in the", TARGET)  # no image: the text model alone
    assert [u.segment for u in text_alone.units].count("image") == 0 and np.abs(text_alone.relevance).max() > 0
    with pytest.raises(InputError, match="1 <image> markers but 2 images"):
        explainer.explain(PROMPT, TARGET, images=[png(64, 64), png(64, 64)])
    with pytest.raises(InputError, match="image"):
        explainer.explain(PROMPT, TARGET, images=[b"not an image"])
    with pytest.raises(InputError, match="^field 'images' must be a list of images, got str$"):
        explainer.explain(PROMPT, TARGET, images="photo.png")  # a lone path, not a list of one
    with pytest.raises(InputError, match="unknown image unit 'pixel'"):
        ExplainRequest(prompt=PROMPT, image_units="pixel")
    with pytest.raises(InputError, match="field 'images': image 1 is not valid base64"):
        ExplainRequest.from_dict({"prompt": PROMPT, "images": ["%%%"]})
    text_only = Explainer.load(tiny_export("llama", "log_additive"), provider="cpu")
    with pytest.raises(InputError, match="this model takes no images"):
        text_only.explain(PROMPT, TARGET, images=[png(64, 64)])


def test_image_text_export_refuses_lighter_precisions(tiny_vlm_dir, tmp_path):
    from atman_onnx.core.errors import AtmanError
    from atman_onnx.export.exporter import export

    with pytest.raises(AtmanError, match="fp16 is not available for image-text models yet"):
        export(str(tiny_vlm_dir("idefics3")), tmp_path / "out", dtype="fp16")
