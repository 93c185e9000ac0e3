"""Image-text output: the PNG overlay (pixels), ``explain --overlay``, and the HTML report's images in Chromium
(driven by Playwright)."""

from __future__ import annotations

import base64
import html
import io
import re
import sys

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from atman_onnx import Explanation, ImageBox, Token, Unit
from atman_onnx.cli import main
from atman_onnx.core.errors import InputError
from atman_onnx.overlay import overlay, overlay_png
from atman_onnx.palette import NEGATIVE, POSITIVE, css, shade


def png(width: int, height: int, seed: int = 0) -> bytes:
    """A PNG file of random pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int64)


def hand_made(boxes: list[tuple[ImageBox, list[float]]], images: tuple[bytes, ...]) -> Explanation:
    """A prompt word "look" with relevance (5, 5), then one image token and unit per box with its relevance row."""
    tokens = [Token("look", 0, 4, "prompt")] + [
        Token("<image>", 4 + 7 * i, 11 + 7 * i, "prompt") for i in range(len(boxes))
    ]
    units = [Unit("look", 0, 4, "prompt", (0,))] + [
        Unit(f"image {box.image + 1}, region {i}", 0, 0, "image", (i + 1,), box) for i, (box, _) in enumerate(boxes)
    ]
    relevance = np.array([[5.0, 5.0]] + [row for _, row in boxes], dtype=np.float32)
    return Explanation(
        prompt="look" + "<image>" * len(boxes),
        target=" here",
        prompt_ids=list(range(len(tokens))),
        target_ids=[90, 91],
        tokens=tokens,
        target_tokens=[" he", "re"],
        units=units,
        relevance=relevance,
        mode="log_additive",
        suppression_factor=0.1,
        images=images,
    )


def blend(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """The documented blend: round(0.5 * pixel + 0.5 * colour), halves up."""
    return np.floor(0.5 * pixels + 0.5 * np.asarray(colour) + 0.5).astype(np.int64)


def test_overlay_colours_each_box_by_its_relevance():
    image = png(40, 20)
    # total +2 and -1; the prompt word's +10 is larger but the image is scaled by its own largest value (2)
    explanation = hand_made(
        [(ImageBox(0, 0.0, 0.0, 0.25, 0.5), [1.5, 0.5]), (ImageBox(0, 0.5, 0.5, 0.25, 0.5), [-1.0, 0.0])], (image,)
    )
    drawn = np.asarray(overlay(explanation), dtype=np.int64)
    original = pixels_of(image)
    assert drawn.shape[1] == 40 and drawn.shape[0] > 20  # the image, then the legend strip below it
    assert shade(1.0) == POSITIVE == (214, 39, 40) and shade(-0.5) == (144, 179, 226)
    expected = original.copy()
    expected[0:10, 0:10] = blend(original[0:10, 0:10], (214, 39, 40))  # +2 / 2: full red
    expected[10:20, 20:30] = blend(original[10:20, 20:30], (144, 179, 226))  # -1 / 2: half blue
    assert np.array_equal(drawn[:20], expected)  # and outside the boxes the image is unchanged
    assert np.array_equal(pixels_of(overlay_png(explanation)), drawn)


def test_overlapping_boxes_add_up_and_the_legend_spans_the_palette():
    image = png(40, 20, seed=1)
    # the global image's unit (whole image, +1) under a tile's unit (left half, -3): the left half sums to -2
    explanation = hand_made(
        [(ImageBox(0, 0.0, 0.0, 0.5, 1.0), [-3.0, 0.0]), (ImageBox(0, 0.0, 0.0, 1.0, 1.0), [0.5, 0.5])], (image,)
    )
    drawn = np.asarray(overlay(explanation), dtype=np.int64)
    original = pixels_of(image)
    assert np.array_equal(drawn[:20, :20], blend(original[:, :20], NEGATIVE))  # -2 / 2
    assert np.array_equal(drawn[:20, 20:], blend(original[:, 20:], (235, 147, 148)))  # +1 / 2
    assert shade(0.5) == (235, 147, 148)
    row = drawn[20 + np.argwhere((drawn[20:] == NEGATIVE).all(axis=2))[0, 0]]  # the legend bar's first row
    coloured = np.flatnonzero((row != 255).any(axis=1))
    assert tuple(row[coloured[0]]) == NEGATIVE and tuple(row[coloured[-1]]) == POSITIVE
    assert coloured[-1] - coloured[0] >= 0.7 * 40  # across the image's width
    assert (row[(coloured[0] + coloured[-1]) // 2 : (coloured[0] + coloured[-1]) // 2 + 2] >= 240).all()  # white


def test_overlay_refusals(monkeypatch):
    image = png(8, 8)
    box = ImageBox(0, 0.0, 0.0, 1.0, 1.0)
    with pytest.raises(InputError, match=r"^the explanation carries no images to draw on \(.*\)$"):
        overlay(hand_made([(box, [1.0, 0.0])], ()))
    with pytest.raises(InputError, match=r"^image_index 1 is out of range: 1 images were explained$"):
        overlay(hand_made([(box, [1.0, 0.0])], (image,)), image_index=1)
    with pytest.raises(InputError, match=r"^the explanation has no units on image 2$"):
        overlay(hand_made([(box, [1.0, 0.0])], (image, image)), image_index=1)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(InputError, match=r"^images need Pillow: pip install 'atman-onnx\[images\]'$"):
        overlay(hand_made([(box, [1.0, 0.0])], (image,)))


def test_report_of_a_tiff_embeds_it_as_png_with_its_boxes():
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png(30, 20))).save(buffer, format="TIFF")  # browsers do not show TIFF
    explanation = hand_made(
        [(ImageBox(0, 0.0, 0.0, 0.5, 1.0), [1.0, 0.0]), (ImageBox(0, 0.5, 0.0, 0.5, 1.0), [-0.5, 0.0])],
        (buffer.getvalue(),),
    )
    page = explanation.to_html()
    src = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(src) == 1 and np.array_equal(pixels_of(base64.b64decode(src[0])), pixels_of(png(30, 20)))
    boxes = elements("div", page, "box")  # side by side, no overlap: one view; scaled by the word's total, 10
    assert [(b["data-index"], b["style"]) for b in boxes] == [
        ("1", "left: 0.000%; top: 0.000%; width: 50.000%; height: 100.000%; background: rgb(251, 233, 234)"),
        ("2", "left: 50.000%; top: 0.000%; width: 50.000%; height: 100.000%; background: rgb(244, 247, 252)"),
    ]
    assert [b["title"] for b in boxes] == ["image 1, region 0 \u00b7 +1.0000", "image 1, region 1 \u00b7 -0.5000"]
    assert '>look</span><span class="imgref">[image 1]</span></div>' in page and "&lt;image&gt;" not in page


def test_overlay_flag_refusals_write_nothing(tmp_path, capsys):
    out = tmp_path / "out.png"
    assert main(["explain", str(tmp_path), "--prompt", "a dog", "--overlay", str(out)]) == 2
    assert capsys.readouterr().err == (
        "atman-onnx: error: --overlay draws on the prompt's images: give them with --image\n"
    )
    (tmp_path / "a.png").write_bytes(png(8, 8))
    missing = tmp_path / "nowhere" / "out.png"
    assert (
        main(
            [
                "explain",
                str(tmp_path),
                "--prompt",
                "a <image>",
                "--image",
                str(tmp_path / "a.png"),
                "--overlay",
                str(missing),
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.strip().endswith(f"cannot write {missing}: folder {missing.parent} does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


SIZES = [(150, 60), (40, 100)]  # each 2 tiles and the global one (the tiny model has 128 positions)


@pytest.fixture(scope="module")
def cli_run(tiny_vlm_export, tmp_path_factory):
    """``explain --json --html --overlay`` on a tiny Idefics3 with two images and token units (the global image's
    tokens overlap the tiles')."""
    folder, out = tiny_vlm_export("idefics3", "log_additive"), tmp_path_factory.mktemp("image-cli")
    images = []
    for n, size in enumerate(SIZES):
        images.append(out / f"in{n + 1}.png")
        images[-1].write_bytes(png(*size, seed=n))
    code = main(
        [
            "explain",
            str(folder),
            "--prompt",
            "A <image> and <image> in the",
            "--target",
            " garden",
            "--image",
            str(images[0]),
            "--image",
            str(images[1]),
            "--granularity",
            "word",
            "--image-units",
            "token",
            "--provider",
            "cpu",
            "--quiet",
            "--json",
            str(out / "e.json"),
            "--html",
            str(out / "e.html"),
            "--overlay",
            str(out / "heat.png"),
        ]
    )
    assert code == 0
    return out, Explanation.from_json((out / "e.json").read_text())


def test_cli_overlay_writes_one_png_per_image(cli_run):
    out, explanation = cli_run
    assert sorted(p.name for p in out.iterdir()) == ["e.html", "e.json", "heat-2.png", "heat.png", "in1.png", "in2.png"]
    assert len(explanation.images) == 2
    for n, (name, (width, height)) in enumerate(zip(["heat.png", "heat-2.png"], SIZES)):
        written = pixels_of((out / name).read_bytes())
        assert written.shape[1] == width and written.shape[0] > height
        assert np.array_equal(written, np.asarray(overlay(explanation, n), dtype=np.int64))
        original = pixels_of((out / f"in{n + 1}.png").read_bytes())
        assert (written[:height] != original).any(axis=2).mean() > 0.5  # the units cover the image


def elements(name: str, dom: str, cls: str | None = None) -> list[dict[str, str]]:
    """The attributes of each ``name`` element of serialised HTML (only those of class ``cls`` when given)."""
    found = [
        {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', attrs)}
        for attrs in re.findall(rf"<{name}(\s[^>]*)?>", dom)
    ]
    return [f for f in found if cls is None or cls in f.get("class", "").split()]


@pytest.fixture
def report(cli_run, page: Page) -> tuple[Explanation, Page]:
    """The report written by ``cli_run`` open in headless Chromium."""
    out, explanation = cli_run
    page.goto((out / "e.html").as_uri())
    return explanation, page


def test_report_embeds_the_images_and_replaces_their_tokens(cli_run):
    out, explanation = cli_run
    page = (out / "e.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    for data in explanation.images:
        assert f'src="data:image/png;base64,{base64.b64encode(data).decode()}"' in page
    image_units = [i for i, u in enumerate(explanation.units) if u.box is not None]
    assert len(image_units) == 2 * 3 * 16  # two images, 2 tiles and the global one each, 16 tokens a tile
    assert page.count('class="unit box"') == len(image_units)
    heatmap = page.split('<div class="heatmap">')[1].split("</div>")[0]
    assert "&lt;image&gt;" not in heatmap and "fake_token" not in heatmap and "row_1" not in heatmap
    assert re.sub(r"<[^>]*>", "", heatmap).split("\n")[0].startswith("A [image 1] and [image 2] in the")


def test_chromium_draws_one_box_per_image_unit_over_its_image(report):
    explanation, page = report
    natural = page.locator("img").evaluate_all("images => images.map(i => [i.naturalWidth, i.naturalHeight])")
    # a split image is shown twice: its tiles' tokens, then the global image's tokens, which overlap them
    assert natural == [[150, 60]] * 2 + [[40, 100]] * 2
    boxes = page.locator(".box")
    indices = [int(i) for i in boxes.evaluate_all("boxes => boxes.map(b => b.dataset.index)")]
    assert sorted(indices) == [i for i, u in enumerate(explanation.units) if u.box is not None]
    for i, box in zip(indices, boxes.all()):
        want = explanation.units[i].box
        frame, drawn = box.locator("xpath=../img").bounding_box(), box.bounding_box()
        place = [
            (drawn["x"] - frame["x"]) / frame["width"],
            (drawn["y"] - frame["y"]) / frame["height"],
            drawn["width"] / frame["width"],
            drawn["height"] / frame["height"],
        ]
        assert np.allclose(place, [want.left, want.top, want.width, want.height], atol=0.01), (i, want)
        box.hover(trial=True)  # fails if anything covers it: it can be hovered and tapped


def test_chromium_shows_box_scores_and_recolours_them(report):
    explanation, page = report
    boxes, info = page.locator(".box"), page.locator("#info")
    indices = [int(i) for i in boxes.evaluate_all("boxes => boxes.map(b => b.dataset.index)")]
    total, first = explanation.total.astype(float), explanation.relevance[:, 0].astype(float)
    said = lambda i: (  # what the info line says about unit i
        f"#{i} \u201c{explanation.units[i].text}\u201d (image): relevance {total[i]:+.4f} for all of the target (sum)"
    )
    boxes.nth(3).hover()
    expect(info).to_have_text(said(indices[3]))
    boxes.last.click()  # as a tap on a phone
    expect(info).to_have_text(said(indices[-1]))
    expect(boxes.last).to_contain_class("picked")
    backgrounds = "boxes => boxes.map(b => getComputedStyle(b).backgroundColor)"
    by_total = [css(total[i] / np.abs(total).max()) for i in indices]
    assert boxes.evaluate_all(backgrounds) == by_total
    page.click(".selector button[data-t='0']")
    by_first = [css(first[i] / np.abs(first).max()) for i in indices]
    assert boxes.evaluate_all(backgrounds) == by_first
    assert sum(a != b for a, b in zip(by_total, by_first)) > len(indices) // 2
    titles = [f"{explanation.units[i].text} \u00b7 {first[i]:+.4f}" for i in indices]
    assert boxes.evaluate_all("boxes => boxes.map(b => b.title)") == titles
