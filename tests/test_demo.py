"""``python -m sdk demo``: the web page started for real on loopback and driven in headless Chromium.

Needs the ``[demo]`` extra (Gradio), Playwright's Python package and a Chromium binary (Debian's
``chromium``; never ``playwright install``). Without them the browser tests skip with the reason,
except under ``CI=true``, where ``.ci/run`` installs them and their absence fails.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.sdk_helpers import block_image, shared_bundle

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VOCAB_TEXT = "cat; dog\nsofa; floor"
VOCAB = ["cat", "dog", "sofa", "floor"]
LOOPBACK = ("http://127.0.0.1", "data:", "blob:")


# ---------------------------------------------------------------------------- helpers without gradio
def test_vocabulary_box_is_parsed_like_the_cli():
    """The demo's box goes through the one class-name parser: ';' or new lines, synonyms normalised."""
    from sdk.classnames import split_names
    from sdk.demo import DemoHandlers

    assert split_names("cat; dog ;\n sky\n\n;tree, bush") == ["cat", "dog", "sky", "tree, bush"]
    handlers = DemoHandlers(seg=None, files_dir=Path("."))
    assert handlers.vocabulary_spec("", "cat;tree,bush") == ["cat", "tree, bush"]  # as --vocab "cat;tree,bush"
    assert split_names("  ;\n ") == []


def test_readout_legend_and_downloads(tmp_path):
    from PIL import Image

    from sdk.demo import KEEP_DOWNLOADS, legend_html, readout, write_downloads
    from sdk.result import SegmentationResult, build_segments

    labels = np.zeros((4, 5), np.int32)
    labels[:, 4] = 2  # 4 of 20 pixels
    names = ("sky", "<b>x</b>", "tree, bush")
    result = SegmentationResult(labels, names, build_segments(labels, names, np.ones(3, bool), np.full(3, 0.5)))
    assert readout(labels, names, 4, 1) == "(4, 1): **tree, bush** (20.0% of the image)"
    assert "outside" in readout(labels, names, 5, 0)
    legend = legend_html(result)
    assert legend.index(">sky<") < legend.index(">tree, bush<") and "80.0%" in legend and "20.0%" in legend
    assert "<b>x</b>" not in legend  # absent class; names are escaped anyway
    image = block_image(4, 5)
    for _ in range(KEEP_DOWNLOADS + 3):
        png, vis, js = write_downloads(result, image, tmp_path, "r")
    assert len(list(tmp_path.iterdir())) == KEEP_DOWNLOADS
    assert np.array_equal(np.asarray(Image.open(png)), labels)
    assert np.asarray(Image.open(vis)).shape[1] > 5  # the image and a legend panel
    from sdk.outputs import image_record

    record = json.loads(js.read_text())
    assert record == {**image_record("r", "r", result), "timings_ms": record["timings_ms"]}  # segment's record
    assert record["overlay"] == vis.name and record["segments"][0]["bbox"] == [0, 0, 4, 4]


def test_demo_module_imports_gradio_lazily():
    code = "import sys, sdk.cli, sdk.demo; sdk.cli.build_parser(); print('gradio' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- the page in a browser
def _missing(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI must install it: see .ci/run)")
    pytest.skip(reason)


def _chromium() -> str:
    for candidate in (
        os.environ.get("ZEGFORMER_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    _missing("no Chromium binary (apt-get install -y chromium, or set ZEGFORMER_CHROMIUM)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the demo did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return shared_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    """``python -m sdk demo`` in a subprocess on a free loopback port; stopped after the module."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        _missing("gradio is not installed (pip install -e '.[demo]')")
    bundle = shared_bundle(tmp_path_factory)
    root = tmp_path_factory.mktemp("demo")
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(root / "gradio"),
        "ZEGFORMER_CACHE": str(root / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    log = root / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sdk",
                "demo",
                "--bundle",
                str(bundle),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--threads",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_http(url, proc, log)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright; no 'playwright install' needed)")
    executable = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, demo_url):
    """A fresh page of the demo; every request the page makes off loopback is recorded and refused."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.external = []

    def route(r):
        if r.request.url.startswith(LOOPBACK):
            return r.continue_()
        page.external.append(r.request.url)
        return r.abort()

    context.route("**/*", route)
    page.set_default_timeout(60_000)
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)  # a segmentation on a loaded 2-core machine can take longer than 5 s
    page.goto(demo_url[0])
    page.wait_for_selector("#segment-button")
    yield page
    context.close()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("demo_images") / "blocks.png"
    image = block_image(90, 120, seed=3)
    Image.fromarray(image).save(path)
    return path, image


def _segment(page, image_path, vocabulary: str, mode: str = None):
    if image_path is not None:
        page.locator("#input-image input[type=file]").set_input_files(str(image_path))
    page.locator("#vocabulary textarea").fill(vocabulary)
    if mode:
        page.locator("#mode").get_by_label(mode, exact=True).check()
    page.click("#segment-button")


def _expect_message(page, pattern: str):
    from playwright.sync_api import expect

    expect(page.get_by_text(re.compile(pattern)).first).to_be_visible(timeout=30_000)


def _legend(page):
    rows = page.locator("#legend .legend-row")
    return [
        (rows.nth(i).locator(".legend-name").inner_text(), rows.nth(i).locator(".legend-area").inner_text())
        for i in range(rows.count())
    ]


def _fetch(page, url: str) -> bytes:
    response = page.request.get(url)
    assert response.ok, f"{url}: HTTP {response.status}"
    return response.body()


def _content_box(img):
    """Offset and scale of the picture inside an ``<img>`` (``object-fit`` contain or scale-down)."""
    w, h, fit = img.evaluate("e => [e.naturalWidth, e.naturalHeight, getComputedStyle(e).objectFit]")
    box = img.bounding_box()
    scale = min(box["width"] / w, box["height"] / h)
    if fit == "scale-down":
        scale = min(scale, 1.0)
    elif fit not in ("contain",):
        scale = box["width"] / w  # fill / none: the element is the picture
    return (box["width"] - w * scale) / 2, (box["height"] - h * scale) / 2, scale


def test_page_renders_offline(page, bundle):
    from sdk.bundle import Bundle

    assert page.external == [], f"the page tried to reach the internet: {page.external}"
    assert not (REPO / "sdk" / "demo.pyi").exists(), "Gradio wrote a stub into the package"
    assert "zegformer-sdk" in page.inner_text("body")
    modes = page.locator("#mode input[type=radio]").evaluate_all("els => els.map(e => e.value)")
    assert modes == ["cropmask", "pruned", "maskpool", "proposal"]
    default = Bundle(bundle).default_vocabulary  # the box starts with the bundle's default names
    assert default and page.locator("#vocabulary textarea").input_value().splitlines() == list(
        _reference_segmenter(bundle).resolve_vocabulary(default).names
    )


_SEGMENTERS = {}


def _reference_segmenter(bundle):
    from sdk import Segmenter

    if bundle not in _SEGMENTERS:
        _SEGMENTERS[bundle] = Segmenter(bundle, backend="onnxruntime", cache_dir=False, threads=1)
    return _SEGMENTERS[bundle]


def test_result_matches_the_sdk(page, bundle, image_file):
    """Legend, overlay, click readout, timings and downloads agree with an in-process Segmenter."""
    from PIL import Image
    from playwright.sync_api import expect

    from sdk.visualize import overlay

    path, image = image_file
    ref = _reference_segmenter(bundle)
    for mode in ("cropmask", "proposal"):
        expected = ref(image, vocabulary=VOCAB, mode=mode)
        _segment(page, path if mode == "cropmask" else None, VOCAB_TEXT, mode)
        expect(page.locator("#timings")).to_contain_text(f"mode {mode}")
        legend = _legend(page)
        total = expected.label_map.size
        assert [n for n, _ in legend] == [s.name for s in expected.segments] and legend
        assert {n for n, _ in legend} <= set(VOCAB)
        for (_, shown), seg in zip(legend, expected.segments):
            assert abs(float(shown.rstrip("%")) - 100 * seg.area / total) <= 0.5
        timings = page.inner_text("#timings")
        assert re.search(r"total\s+[\d.]+ ms", timings) and f"mode {mode}" in timings

        src = page.locator("#overlay img").get_attribute("src")
        shown = np.asarray(Image.open(io.BytesIO(_fetch(page, src))).convert("RGB"))
        want = overlay(image, expected, 0.5, legend=False)
        assert shown.shape == want.shape == (*image.shape[:2], 3)
        assert np.mean(np.all(shown == want, axis=-1)) > 0.99

        links = page.locator("#downloads a").evaluate_all("els => els.map(e => e.href)")
        js = next(u for u in links if u.endswith(".json"))
        png = next(u for u in links if u.endswith("result.png"))  # the files segment writes (sdk.outputs)
        assert any(u.endswith("result_overlay.png") for u in links)
        record = json.loads(_fetch(page, js))
        assert record["class_names"] == VOCAB and record["info"]["mode"] == mode
        assert [s["name"] for s in record["segments"]] == [s.name for s in expected.segments]
        assert all("bbox" in s and "rle" in s for s in record["segments"])  # the record segment writes
        labels = np.asarray(Image.open(io.BytesIO(_fetch(page, png))))
        assert np.mean(labels == expected.label_map) > 0.99

    img = page.locator("#overlay img")
    left, top, scale = _content_box(img)  # the image is letterboxed inside its <img> element
    fx, fy = 0.7, 0.3
    img.click(position={"x": left + fx * image.shape[1] * scale, "y": top + fy * image.shape[0] * scale})
    expect(page.locator("#readout")).to_contain_text("% of the image")
    m = re.search(r"\((\d+), (\d+)\): (.+?) \(", page.inner_text("#readout"))
    x, y = int(m.group(1)), int(m.group(2))
    assert abs(x - fx * image.shape[1]) <= 3 and abs(y - fy * image.shape[0]) <= 3
    assert m.group(3) == expected.class_names[expected.label_map[y, x]]
    assert page.external == []


def test_bad_input_shows_a_message_and_the_server_keeps_serving(page, demo_url, tmp_path, image_file):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image\n")
    _segment(page, text_file, VOCAB_TEXT)  # refused by the browser's file check or the server
    _expect_message(page, r"Invalid file type|not an image|no image yet")

    page.reload()
    page.wait_for_selector("#segment-button")
    broken = tmp_path / "broken.png"  # an image name, not an image: the server must say so
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    _segment(page, broken, VOCAB_TEXT)
    _expect_message(page, r"broken\.png is not an image that can be read")

    page.reload()
    page.wait_for_selector("#segment-button")
    _segment(page, image_file[0], " ;\n ")
    _expect_message(page, r"the vocabulary is empty")
    assert page.locator("#legend .legend-row").count() == 0

    _segment(page, None, VOCAB_TEXT)  # the same page, a good request now
    page.wait_for_selector("#legend .legend-row")
    assert {n for n, _ in _legend(page)} <= set(VOCAB)
    assert demo_url[1].poll() is None, "the demo server died"


def test_a_new_vocabulary_on_the_same_image_only_reclassifies(page, bundle, tmp_path):
    """The page keeps the image's features: the second vocabulary runs no image graph (stage timings)."""
    from PIL import Image
    from playwright.sync_api import expect

    image = block_image(80, 112, seed=29)  # an image no other test sent: its first request encodes it
    path = tmp_path / "fresh.png"
    Image.fromarray(image).save(path)
    ref = _reference_segmenter(bundle)
    second_text, second = "sky; road\ntree, bush", ["sky", "road", "tree, bush"]

    _segment(page, path, VOCAB_TEXT, "cropmask")
    expect(page.locator("#timings")).to_contain_text("proposal")
    first = page.inner_text("#timings")
    assert re.search(r"proposal\s+[\d.]+ ms", first) and re.search(r"clip\s+[\d.]+ ms", first)
    assert [n for n, _ in _legend(page)] == [s.name for s in ref(image, vocabulary=VOCAB).segments]

    for _ in range(2):  # another vocabulary, then "segment" again with it: both only re-classify
        _segment(page, None, second_text)
        expect(page.locator("#timings")).to_contain_text("features reused")
        timings = page.inner_text("#timings")
        assert not re.search(r"\b(preprocess|proposal|crops|clip)\s+[\d.]+ ms", timings), timings
        assert re.search(r"semantic\s+[\d.]+ ms", timings) and re.search(r"total\s+[\d.]+ ms", timings)
        expected = ref(image, vocabulary=second)
        expect(page.locator("#legend .legend-row").first).to_be_visible()
        assert [n for n, _ in _legend(page)] == [s.name for s in expected.segments]
