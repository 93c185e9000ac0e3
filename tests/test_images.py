"""Images for Idefics3 and SmolVLM: pixels, prompt tokens and token boxes equal to what transformers produces."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from atman_onnx.core.errors import ContractError, InputError
from atman_onnx.runtime.image_config import ImageConfig
from atman_onnx.runtime.image_layout import expand_prompt, image_prompt, token_boxes
from atman_onnx.runtime.image_load import load_image
from atman_onnx.runtime.image_tiles import Processed, ProcessedImage, preprocess

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

PROCESSORS = {"idefics3": transformers.Idefics3ImageProcessorPil, "smolvlm": transformers.SmolVLMImageProcessorPil}
SMALL = {"max_image_size": {"longest_edge": 64}, "size": {"longest_edge": 256}}
# SmolVLM-256M-Instruct's preprocessor_config.json and processor_config.json, as on the hub.
SMOLVLM_256M = {
    "do_convert_rgb": True,
    "do_image_splitting": True,
    "do_normalize": True,
    "do_pad": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "image_processor_type": "Idefics3ImageProcessor",
    "max_image_size": {"longest_edge": 512},
    "processor_class": "Idefics3Processor",
    "resample": 1,
    "rescale_factor": 0.00392156862745098,
    "size": {"longest_edge": 2048},
}
SMOLVLM_256M_PROCESSOR = {"image_seq_len": 64, "processor_class": "Idefics3Processor"}
# (width, height): tiny, odd, square, exactly one tile, just over, very wide and tall, larger than the first resize
SMALL_SIZES = [
    (1, 1),
    (2, 7),
    (7, 2),
    (63, 63),
    (64, 64),
    (65, 64),
    (64, 65),
    (128, 64),
    (64, 128),
    (129, 63),
    (200, 199),
    (300, 300),
    (1000, 9),
    (9, 1000),
    (999, 1),
    (257, 511),
    (5000, 4000),
]
REAL_SIZES = [(640, 480), (301, 899), (512, 512), (4000, 30), (17, 1)]
WORDS = ["[UNK]", " ", "\n", "Describe", "this", "and", "that", "."]
IMAGE_TOKENS = [
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
]


def random_image(width: int, height: int, seed: int = 0, channels: int = 3) -> Image.Image:
    """Noise (the hardest case for resampling), RGB, RGBA (4 channels) or L (1 channel)."""
    pixels = np.random.default_rng(seed + width * 7919 + height).integers(0, 256, (height, width, channels), np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)


def transformers_pixels(kind: str, images: list, settings: dict) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """pixel_values [tiles, 3, S, S] and (rows, cols) per image from transformers' PIL image processor."""
    out = PROCESSORS[kind](**settings)(images=[images], return_row_col_info=True)
    assert out["pixel_attention_mask"].all()  # one sample: no padding, which is why preprocess returns no mask
    return out["pixel_values"][0], list(zip(out["rows"][0], out["cols"][0]))


def config_of(settings: dict, **prompt) -> ImageConfig:
    return ImageConfig.from_dict({**settings, **prompt})


def assert_same_pixels(kind: str, images: list, settings: dict) -> None:
    expected, layouts = transformers_pixels(kind, images, settings)
    processed = preprocess(images, config_of(settings))
    assert processed.pixel_values.dtype == np.float32
    assert processed.pixel_values.shape == expected.shape
    assert np.array_equal(processed.pixel_values, expected)
    assert processed.layouts == layouts
    assert [len(image.pixel_values) for image in processed.images] == [rows * cols + 1 for rows, cols in layouts]


@pytest.mark.parametrize("kind", PROCESSORS)
@pytest.mark.parametrize("split", [True, False])
@pytest.mark.parametrize("size", SMALL_SIZES)
def test_pixels_equal_transformers_small_tiles(kind, split, size):
    assert_same_pixels(kind, [random_image(*size)], {**SMALL, "do_image_splitting": split})


@pytest.mark.parametrize("kind", PROCESSORS)
@pytest.mark.parametrize("size", REAL_SIZES)
def test_pixels_equal_transformers_smolvlm_256m(kind, size):
    assert_same_pixels(kind, [random_image(*size)], SMOLVLM_256M)


@pytest.mark.parametrize(
    "settings",
    [
        {**SMOLVLM_256M, "do_image_splitting": False},
        {**SMOLVLM_256M, "do_resize": False},
        {**SMALL, "do_resize": False, "resample": 3, "do_normalize": False},
        {**SMALL, "do_rescale": False, "image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.3, 0.25]},
        {"max_image_size": {"longest_edge": 64}, "size": {"longest_edge": 200}},  # not a multiple of the tile
        {},  # transformers' defaults: 364 px tiles, 1456 px longest edge
    ],
    ids=["256m-no-split", "256m-no-resize", "no-resize-bicubic", "no-rescale-own-mean", "edge-200", "defaults"],
)
def test_pixels_equal_transformers_other_settings(settings):
    # several images in one call, their tiles concatenated; 65 x 64 unresized rounds up to 2 x 2 tiles, not 1 x 2
    images = [
        random_image(700, 300),
        random_image(64, 64, seed=1),
        random_image(90, 250, seed=2),
        random_image(65, 64, seed=3),
    ]
    assert_same_pixels("idefics3", images, settings)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_other_modes_convert_like_transformers(mode):
    image = random_image(150, 70, channels=4 if mode == "RGBA" else 1)
    assert image.mode == ("RGBA" if mode == "RGBA" else "L")
    if mode == "P":
        image = random_image(150, 70).convert("P")
        image.info["transparency"] = 3
    assert_same_pixels("smolvlm", [image], SMALL)


def test_files_load_upright_like_transformers(tmp_path):
    from transformers.image_utils import load_image as transformers_load

    path = tmp_path / "turned.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated 90 degrees
    random_image(40, 20).save(path, exif=exif)
    ours = load_image(path)
    assert ours.size == (20, 40) and ours.mode == "RGB"
    assert np.array_equal(np.asarray(ours), np.asarray(transformers_load(str(path))))
    assert np.array_equal(np.asarray(load_image(path.read_bytes())), np.asarray(ours))


def test_tile_boxes_cover_the_image():
    image = preprocess([random_image(200, 100)], config_of(SMALL)).images[0]
    assert (image.rows, image.cols, image.size) == (2, 4, (200, 100))
    assert image.boxes[0] == (0.0, 0.0, 0.25, 0.5)
    assert image.boxes[6] == (0.5, 0.5, 0.25, 0.5)
    assert image.boxes[-1] == (0.0, 0.0, 1.0, 1.0)
    assert sum(w * h for _, _, w, h in image.boxes[:-1]) == pytest.approx(1.0)
    # the split tiles are the stretched image cut in a grid: tile (1, 2) is its pixels 64..128 x 128..192
    stretched = random_image(200, 100).resize((256, 128), Image.LANCZOS).resize((256, 128), Image.LANCZOS)
    expected = (np.asarray(stretched)[64:128, 128:192].transpose(2, 0, 1) / 255 - 0.5) / 0.5
    assert np.abs(image.pixel_values[6] - expected).max() < 1e-6


# -- prompts --------------------------------------------------------------------------------------------------------


def tokenizer(**extra_special_tokens):
    """A word-level tokenizer with spaces and newlines as tokens, and the image tokens as special tokens."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    words = Tokenizer(models.WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s|\."), behavior="isolated")
    words.add_special_tokens([*IMAGE_TOKENS, *extra_special_tokens.values()])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=words, unk_token="[UNK]", extra_special_tokens=extra_special_tokens
    )


def smolvlm_processor(monkeypatch, image_processor, tok, image_seq_len):
    """SmolVLMProcessor without a video processor (SmolVLM's needs torchvision); num2words is for videos only."""
    from transformers.models.smolvlm import processing_smolvlm as module

    monkeypatch.setattr(module, "num2words", str)
    check = module.SmolVLMProcessor.check_argument_for_proper_class
    monkeypatch.setattr(
        module.SmolVLMProcessor,
        "check_argument_for_proper_class",
        lambda self, name, arg: None if name == "video_processor" else check(self, name, arg),
    )
    return module.SmolVLMProcessor(image_processor, tok, None, image_seq_len=image_seq_len)


def processor(kind, monkeypatch, settings, image_seq_len, tok=None):
    tok = tok or tokenizer()
    image_processor = PROCESSORS[kind](**settings)
    if kind == "idefics3":
        return transformers.Idefics3Processor(image_processor, tok, image_seq_len=image_seq_len)
    return smolvlm_processor(monkeypatch, image_processor, tok, image_seq_len)


PROMPT = "Describe <image> and <image>\nthat<image>."


@pytest.mark.parametrize("kind", PROCESSORS)
@pytest.mark.parametrize("split", [True, False])
def test_prompt_ids_equal_transformers(kind, split, monkeypatch):
    settings = {**SMALL, "do_image_splitting": split}
    images = [random_image(200, 100), random_image(30, 30, seed=1), random_image(64, 300, seed=2)]
    hf = processor(kind, monkeypatch, settings, image_seq_len=4)
    expected = hf(text=PROMPT, images=images)
    config = config_of(settings, image_seq_len=4)
    processed = preprocess(images, config)
    expanded = expand_prompt(PROMPT, processed.layouts, config)

    assert processed.layouts == ([(2, 4), (4, 4), (4, 1)] if split else [(0, 0)] * 3)
    assert hf.tokenizer(expanded)["input_ids"] == expected["input_ids"][0]
    assert 0 not in expected["input_ids"][0]  # no [UNK]: every image token is a token of its own
    assert "".join(hf.tokenizer.convert_ids_to_tokens(expected["input_ids"][0])) == expanded  # every token verbatim
    assert np.array_equal(processed.pixel_values, expected["pixel_values"][0])
    image_ids = np.array(expected["input_ids"][0]) == hf.tokenizer.convert_tokens_to_ids("<image>")
    assert image_ids.sum() == len(token_boxes(processed, config)) == 4 * len(processed.pixel_values)


def test_prompt_layout_by_hand():
    config = ImageConfig(image_seq_len=4)
    assert (
        image_prompt(0, 0, config)
        == "<fake_token_around_image><global-img>" + "<image>" * 4 + "<fake_token_around_image>"
    )
    tile = "<image>" * 4
    assert image_prompt(2, 1, config) == (
        f"<fake_token_around_image><row_1_col_1>{tile}\n<fake_token_around_image><row_2_col_1>{tile}\n"
        f"\n<fake_token_around_image><global-img>{tile}<fake_token_around_image>"
    )
    assert expand_prompt("a <image> b", [(0, 0)], config) == f"a {image_prompt(0, 0, config)} b"


def test_smolvlm_token_strings_come_from_its_tokenizer(tmp_path, monkeypatch):
    names = {"fake_image_token": "<fake>", "global_image_token": "<whole>"}
    tok = tokenizer(**names)
    hf = processor("smolvlm", monkeypatch, SMALL, image_seq_len=9, tok=tok)
    (tmp_path / "processor_config.json").write_text(hf.to_json_string())
    tok.save_pretrained(tmp_path)
    config = ImageConfig.load(tmp_path)
    assert (config.fake_image_token, config.global_image_token, config.image_seq_len) == ("<fake>", "<whole>", 9)
    assert (config.tile_size, config.longest_edge) == (64, 256)

    images = [random_image(100, 200)]
    expanded = expand_prompt("this <image>", preprocess(images, config).layouts, config)
    assert "<whole>" in expanded and "<global-img>" not in expanded
    assert tok(expanded)["input_ids"] == hf(text="this <image>", images=images)["input_ids"][0]


def test_loads_what_idefics3_processor_saves(tmp_path):
    settings = {**SMALL, "resample": 2, "do_image_splitting": False, "image_mean": [0.1, 0.2, 0.3]}
    transformers.Idefics3Processor(PROCESSORS["idefics3"](**settings), tokenizer(), image_seq_len=16).save_pretrained(
        tmp_path
    )
    assert json.loads((tmp_path / "processor_config.json").read_text())["image_processor"]["resample"] == 2
    assert ImageConfig.load(tmp_path) == ImageConfig(
        tile_size=64,
        longest_edge=256,
        resample=2,
        do_image_splitting=False,
        image_mean=(0.1, 0.2, 0.3),
        image_seq_len=16,
    )


def test_loads_hub_checkpoint_layout(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(SMOLVLM_256M))
    (tmp_path / "processor_config.json").write_text(json.dumps(SMOLVLM_256M_PROCESSOR))
    config = ImageConfig.load(tmp_path)
    assert (config.tile_size, config.longest_edge, config.image_seq_len, config.grid) == (512, 2048, 64, 8)
    assert config.rescale_factor == 1 / 255 and config.resample == 1 and config.do_image_splitting


# -- which image token shows what -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["idefics3", "smolvlm"])
@pytest.mark.parametrize("patches, scale", [(8, 2), (32, 4), (26, 2)])  # tiny; SmolVLM-256M; Idefics3
def test_pixel_shuffle_tokens_are_row_major_blocks(kind, patches, scale):
    """Tag every encoder patch with its index, shuffle as the model does, and read which patches each token holds."""
    from transformers.models.idefics3.modeling_idefics3 import Idefics3Connector
    from transformers.models.smolvlm.modeling_smolvlm import SmolVLMConnector

    connector = {"idefics3": Idefics3Connector, "smolvlm": SmolVLMConnector}[kind]
    tags = torch.arange(patches * patches, dtype=torch.float32).view(1, -1, 1)
    tokens = connector.pixel_shuffle(None, tags, scale)[0].long()
    grid = patches // scale
    config = ImageConfig(image_seq_len=grid * grid)
    whole = Processed((ProcessedImage(np.zeros((1, 3, 1, 1), np.float32), 0, 0, (1, 1), ((0.0, 0.0, 1.0, 1.0),)),))
    boxes = token_boxes(whole, config)
    assert tokens.shape == (grid * grid, scale * scale) and len(boxes) == grid * grid
    for token, held in enumerate(tokens.tolist()):
        rows, cols = {p // patches for p in held}, {p % patches for p in held}
        assert len(rows) == len(cols) == scale and len(set(held)) == scale * scale
        left, top, width, height = boxes[token].box
        assert (min(cols) / patches, min(rows) / patches) == pytest.approx((left, top))
        assert ((max(cols) + 1) / patches, (max(rows) + 1) / patches) == pytest.approx((left + width, top + height))


def test_image_features_fill_tokens_in_token_boxes_order(monkeypatch):
    """The model scatters every tile's features, in pixel_values order, into the prompt's image tokens in order."""
    from transformers.models.idefics3.modeling_idefics3 import Idefics3Model

    config = config_of(SMALL, image_seq_len=4)
    images = [random_image(130, 64), random_image(20, 20, seed=3)]
    processed = preprocess(images, config)
    tok = tokenizer()
    ids = torch.tensor([tok(expand_prompt("this <image> and <image>", processed.layouts, config))["input_ids"]])
    image_id = tok.convert_tokens_to_ids("<image>")
    starts = np.cumsum([0] + [len(image.boxes) for image in processed.images])
    tags = [
        (image, tile - starts[image], patch)
        for image in range(len(images))
        for tile in range(starts[image], starts[image + 1])
        for patch in range(4)
    ]
    features = torch.tensor(tags, dtype=torch.float32)
    model = SimpleNamespace(config=SimpleNamespace(image_token_id=image_id))
    merged = Idefics3Model.inputs_merger(model, ids, torch.full((1, ids.shape[1], 3), -1.0), features)[0]
    placed = [
        tuple(int(v) for v in row) for row, is_image in zip(merged.tolist(), (ids[0] == image_id).tolist()) if is_image
    ]
    assert placed == [(t.image, t.tile, t.patch) for t in token_boxes(processed, config)]
    assert [t.tile for t in token_boxes(processed, config) if t.image == 0][::4] == list(range(9))  # 2 x 4 + 1


def test_token_boxes_of_a_split_image():
    config = config_of({**SMALL, "do_resize": False}, image_seq_len=4)
    processed = preprocess([random_image(128, 64)], config)
    assert processed.layouts == [(1, 2)]  # then the global image
    boxes = token_boxes(processed, config)
    assert len(boxes) == 12
    assert boxes[0] == (0, 0, 0, (0.0, 0.0, 0.25, 0.5))
    assert boxes[3] == (0, 0, 3, (0.25, 0.5, 0.25, 0.5))
    assert boxes[5] == (0, 1, 1, (0.75, 0.0, 0.25, 0.5))
    assert boxes[10] == (0, 2, 2, (0.0, 0.5, 0.5, 0.5))


# -- errors ---------------------------------------------------------------------------------------------------------


def test_a_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not pixels")
    with pytest.raises(InputError, match=r"^not an image Pillow can read: .*notes\.txt \(UnidentifiedImageError\)$"):
        load_image(path)
    with pytest.raises(InputError, match=r"not an image Pillow can read: .*notes\.txt"):
        preprocess([str(path)], ImageConfig())
    with pytest.raises(InputError, match="not an image Pillow can read: 15 bytes"):
        load_image(b"\x89PNG not really")
    with pytest.raises(InputError, match=r"no such image file: .*missing\.png"):
        load_image(tmp_path / "missing.png")


def test_markers_must_match_images():
    config = ImageConfig(image_seq_len=4)
    with pytest.raises(InputError, match="2 <image> markers but 1 images"):
        expand_prompt("<image> and <image>", [(0, 0)], config)
    with pytest.raises(InputError, match="0 <image> markers but 1 images"):
        expand_prompt("no marker", [(0, 0)], config)


def test_without_pillow(monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(InputError, match=r"^images need Pillow: pip install 'atman-onnx\[images\]'$"):
        load_image(b"anything")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"image_seq_len": 10}, "image_seq_len must be a square number, got 10"),
        ({"processor_class": "LlavaProcessor"}, "processor 'LlavaProcessor' is not supported"),
        ({"size": {"height": 10, "width": 10}}, "size must give a longest_edge"),
        ({"max_image_size": {"longest_edge": 0}}, "tile_size must be a positive integer, got 0"),
        ({"resample": 9}, "resample must be a PIL filter 0-5, got 9"),
    ],
)
def test_bad_configs(data, message):
    with pytest.raises(ContractError, match=message):
        ImageConfig.from_dict(data)


def test_a_folder_without_processor_config(tmp_path):
    with pytest.raises(ContractError, match="has no processor_config.json or preprocessor_config.json"):
        ImageConfig.load(tmp_path)
    (tmp_path / "processor_config.json").write_text("{not json")
    with pytest.raises(ContractError, match="cannot read .*processor_config.json"):
        ImageConfig.load(tmp_path)


def test_one_number_for_mean_and_std():
    config = ImageConfig.from_dict({"image_mean": 0.25, "image_std": 0.5})
    assert (config.image_mean, config.image_std) == ((0.25, 0.25, 0.25), (0.5, 0.5, 0.5))
    assert_same_pixels("idefics3", [random_image(90, 40)], {**SMALL, "image_mean": 0.25, "image_std": 0.5})


def test_preprocess_takes_a_list(tmp_path):
    with pytest.raises(InputError, match="preprocess takes a list of images, got str"):
        preprocess("cat.png", ImageConfig())
    with pytest.raises(InputError, match="no images to preprocess"):
        preprocess([], ImageConfig())


def test_imports_no_torch():
    script = (
        "import sys, numpy as np; from PIL import Image\n"
        "from atman_onnx.runtime.image_config import ImageConfig\n"
        "from atman_onnx.runtime.image_tiles import preprocess\n"
        "preprocess([Image.new('RGB', (70, 30))], ImageConfig(tile_size=32, longest_edge=64))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
