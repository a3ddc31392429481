"""``python -m sdk demo --bundle DIR``: a local web page (Gradio) to try a bundle.

Image upload or webcam snapshot in, a vocabulary typed (``;`` or one name per line, parsed like
``--vocab``) or a built-in one chosen, a mode chosen; out come the overlay, a legend of the classes
present with their areas, a click readout of the class under the cursor, per-stage timings, and
downloads of the files ``segment`` writes (label map PNG, overlay, record JSON). One
:class:`~sdk.segmenter.Segmenter` serves every request (it is thread-safe); Gradio's queue runs
segmentations one at a time (``--concurrency``) while the page and the cheap events stay
responsive. Gradio is an optional dependency (``pip install 'zegformer-sdk[demo]'``) imported
only here, and only when the demo starts; analytics, share links and server-side rendering are
off, so the page works offline on loopback.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .classnames import split_names
from .errors import ImageError, SegmenterError
from .result import SegmentationResult

log = logging.getLogger(__name__)
CUSTOM = "(typed below)"
INSTALL_HINT = "the demo needs Gradio: pip install 'zegformer-sdk[demo]'"
KEEP_DOWNLOADS = 64  # result folders kept on disk while the demo runs
IMAGE_HEIGHT = 360  # px of the input and overlay panels
IMAGE_HINT = "upload a JPEG, PNG, WebP, BMP or TIFF image"
FEATURES_KEPT = 4  # images (per mode) whose features are kept: asking them again only re-classifies


# ---------------------------------------------------------------------------- serving
def serve_page(
    seg,
    host: str = "127.0.0.1",
    port: int = 7860,
    concurrency: int = 1,
    verbose: bool = False,
    vocabulary: Optional[str] = None,
) -> int:
    """Build the page for ``seg`` and serve it until interrupted (``python -m sdk demo``)."""
    gr = import_gradio()
    files_dir = Path(tempfile.mkdtemp(prefix="zegformer-demo-"))
    try:
        app = build_app(seg, files_dir, concurrency=concurrency, vocabulary=vocabulary)
        print(f"zegformer-sdk demo: {seg.bundle.root} on {seg.backend.describe()} → http://{host}:{port}", flush=True)
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            ssr_mode=False,
            mcp_server=False,
            show_error=True,
            quiet=not verbose,
            allowed_paths=[str(files_dir)],
            theme=gr.themes.Default(),
        )
    finally:
        shutil.rmtree(files_dir, ignore_errors=True)
    return 0


def import_gradio():
    """Gradio, with analytics and version checks off (set before the import reads them)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gradio
    except ImportError as e:
        raise SegmenterError(f"{INSTALL_HINT} ({e})") from e
    return gradio


# ---------------------------------------------------------------------------- pure helpers
def legend_html(result: SegmentationResult) -> str:
    """An HTML table of the classes present: colour swatch, name, share of the pixels, mean score."""
    from .visualize import palette

    colours = palette(len(result.class_names))
    total = float(max(result.label_map.size, 1))
    rows = []
    for s in result.segments:
        r, g, b = (int(c) for c in colours[s.index])
        rows.append(
            f'<tr class="legend-row" data-class="{html.escape(s.name)}">'
            f'<td><span style="display:inline-block;width:1.1em;height:1.1em;border:1px solid #555;'
            f'background:rgb({r},{g},{b})"></span></td>'
            f'<td class="legend-name">{html.escape(s.name)}</td>'
            f'<td class="legend-area" style="text-align:right">{100 * s.area / total:.1f}%</td>'
            f'<td style="text-align:right">{s.score:.2f}</td></tr>'
        )
    head = "<tr><th></th><th>class</th><th>area</th><th>score</th></tr>"
    return f'<table class="legend">{head}{"".join(rows)}</table>'


def timings_html(result: SegmentationResult, encoded: Optional[Dict[str, float]] = None) -> str:
    """Per-stage milliseconds of the image phase (``encoded``; ``None``: features reused, no image graph ran)
    and of the vocabulary phase, their total, and what ran (backend, device, mode, sizes)."""

    def spans(timings: Dict[str, float]) -> str:
        return " · ".join(
            f'<span class="timing">{html.escape(k)} <b>{v:.1f} ms</b></span>'
            for k, v in timings.items()
            if k != "total"
        )

    info = result.info
    total = result.timings.get("total", 0.0) + (encoded or {}).get("total", 0.0)
    image = (
        f'<p class="timings-image">image: {spans(encoded)}</p>'
        if encoded is not None
        else '<p class="timings-image">image: features reused (no image graph ran)</p>'
    )
    about = (
        f"{html.escape(str(info.get('backend')))} on {html.escape(str(info.get('device')))}, "
        f"mode {html.escape(str(info.get('mode')))}, resized to {info.get('resized')}"
    )
    return (
        f'{image}<p class="timings-vocabulary">vocabulary: {spans(result.timings)}</p>'
        f'<p><span class="timing">total <b>{total:.1f} ms</b></span></p><p>{about}</p>'
    )


def write_downloads(
    result: SegmentationResult, image: np.ndarray, out_dir: Path, stem: str, alpha: float = 0.5
) -> List[Path]:
    """The files ``segment`` writes for one image (:mod:`sdk.outputs`: label map PNG, overlay, record
    JSON), under a fresh subfolder of ``out_dir``; returns their paths."""
    from .outputs import output_files, write_image_outputs

    _prune(out_dir, KEEP_DOWNLOADS - 1)
    folder = out_dir / uuid.uuid4().hex
    folder.mkdir(parents=True)
    write_image_outputs(folder, stem, stem, np.asarray(image), result, alpha)
    return list(output_files(folder, stem).values())


def _prune(out_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest download folders (Gradio serves its own copies)."""
    folders = sorted((p for p in out_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in folders[: max(0, len(folders) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def readout(label_map: np.ndarray, class_names: Sequence[str], x: int, y: int) -> str:
    """``"(x, y): name — share of the image"``, or a hint when the point is off the image."""
    h, w = label_map.shape
    if not (0 <= x < w and 0 <= y < h):
        return f"({x}, {y}) is outside the {w}×{h} image"
    k = int(label_map[y, x])
    share = 100.0 * float(np.count_nonzero(label_map == k)) / label_map.size
    return f"({x}, {y}): **{html.escape(class_names[k])}** ({share:.1f}% of the image)"


# ---------------------------------------------------------------------------- the page
class DemoHandlers:
    """What the page's events call; one shared Segmenter, per-session state in Gradio's State.

    The features of the last few images (per mode) are kept: asking the same image again, with
    another vocabulary or not, only re-classifies (``Segmenter.classify``).
    """

    def __init__(self, seg, files_dir: Path):
        self.seg = seg
        self.files_dir = files_dir
        self.builtins: Dict[str, Tuple[str, ...]] = {}
        self._features: OrderedDict[Tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def features(self, image: np.ndarray, mode: str) -> Tuple[Any, Optional[Dict[str, float]]]:
        """``(features, encode timings)`` of ``image`` in ``mode``; the timings are ``None`` when reused."""
        image = np.ascontiguousarray(image)
        key = (hashlib.sha1(image.data).hexdigest(), image.shape, image.dtype.str, mode)
        with self._lock:
            kept = self._features.get(key)
            if kept is not None:
                self._features.move_to_end(key)
                return kept, None
        features = self.seg.encode(image, mode=mode)  # pruned: every query, so any vocabulary is exact
        with self._lock:
            self._features[key] = features
            while len(self._features) > FEATURES_KEPT:
                self._features.popitem(last=False)
        return features, features.timings

    def builtin_names(self, name: str) -> Tuple[str, ...]:
        if name not in self.builtins:
            self.builtins[name] = tuple(self.seg.resolve_vocabulary(name).names)
        return self.builtins[name]

    def vocabulary_text(self, choice: str) -> str:
        """The names of a chosen built-in vocabulary, one per line (to read and edit)."""
        return "\n".join(self.builtin_names(choice)) if choice and choice != CUSTOM else ""

    def vocabulary_spec(self, choice: str, text: str):
        """The built-in name when the box holds exactly its names (precomputed embeddings), else the names."""
        names = split_names(text or "")
        if not names:
            raise SegmenterError(
                "the vocabulary is empty: type class names separated by ';' or one per line, "
                "or choose a built-in vocabulary"
            )
        if choice and choice != CUSTOM and tuple(names) == self.builtin_names(choice):
            return choice
        return names

    def segment(self, image: Optional[np.ndarray], choice: str, text: str, mode: str, alpha: float):
        """Segment one image → overlay, legend, timings, downloads, state for the readout."""
        from .visualize import overlay

        gr = import_gradio()
        try:
            if image is None:
                raise ImageError(f"no image yet: {IMAGE_HINT}, or take a webcam snapshot")
            spec = self.vocabulary_spec(choice, text)
            features, encoded = self.features(np.asarray(image), mode)
            result = self.seg.classify(features, vocabulary=spec)
            downloads = write_downloads(result, image, self.files_dir, "result", float(alpha))
        except SegmenterError as e:
            log.info("request refused: %s", e)
            raise gr.Error(
                html.escape(" ".join(str(e).split())), title="Cannot segment", print_exception=False
            ) from None
        labels = result.label_map.astype(np.uint8 if len(result.class_names) <= 256 else np.uint16)
        vis = overlay(np.asarray(image), result, float(alpha), legend=False)
        hint = "Click the overlay to read the class under the cursor."
        return (
            vis,
            legend_html(result),
            timings_html(result, encoded),
            [str(p) for p in downloads],
            hint,
            (labels, tuple(result.class_names)),
        )

    @staticmethod
    def read_class(state, evt) -> str:
        if state is None:
            return "Segment an image first."
        x, y = (int(v) for v in evt.index)
        return readout(state[0], state[1], x, y)


def _with_event_data(fn, event_type):
    """``fn(state, evt)`` with ``evt`` annotated so that Gradio passes the event (gradio is imported lazily)."""

    def handler(state, evt):
        return fn(state, evt)

    handler.__annotations__ = {"evt": event_type}
    return handler


def readable_upload_errors(gr, component):
    """Decode ``component``'s uploads through the SDK's one image path (:func:`sdk.preprocess.decode_image`:
    pixel guard, documented value ranges), and make an unreadable upload a page error, not a traceback.

    Replaces this instance's ``preprocess`` (a subclass of ``gr.Image`` would make Gradio write a
    ``.pyi`` stub next to this module at run time).
    """

    def preprocess(payload):
        if payload is None:
            return None
        name = getattr(payload, "orig_name", None) or "the upload"
        try:
            return decode_upload(payload, name)
        except ImageError as e:
            raise gr.Error(
                html.escape(f"{name} is not an image that can be read ({' '.join(str(e).split())}); {IMAGE_HINT}"),
                title="Not an image",
                print_exception=False,
            ) from None

    component.preprocess = preprocess
    return component


def decode_upload(payload: Any, name: str) -> np.ndarray:
    """An upload (a file Gradio stored, or a ``data:`` URL from the webcam) → ``H×W×3`` uint8 RGB."""
    import base64
    import binascii

    from .preprocess import decode_image

    url = getattr(payload, "url", None) or ""
    if url.startswith("data:"):
        try:
            data = base64.b64decode(url.split(",", 1)[-1], validate=False)
        except (binascii.Error, ValueError) as e:
            raise ImageError(f"{name} is not a valid data URL ({e})") from e
        return decode_image(data, name)
    path = getattr(payload, "path", None)
    if not path:
        raise ImageError(f"{name} arrived without a file")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read {name}: {e.strerror or e}") from e
    return decode_image(data, name)


def build_app(seg, files_dir: Path, concurrency: int = 1, vocabulary: Optional[str] = None):
    """The Gradio Blocks page for ``seg`` (not launched); ``vocabulary``: the ``--vocab`` it starts with."""
    gr = import_gradio()
    from .modes import MODES

    h = DemoHandlers(seg, files_dir)
    modes = [m for m in MODES if m != "maskpool" or seg.bundle.has_graph("clip_dense")]
    builtins = list(seg.builtin_vocabularies)
    start = vocabulary if vocabulary is not None else seg.bundle.default_vocabulary
    default = start if start in builtins else None
    typed = "\n".join(seg.class_names) if vocabulary is not None and default is None else ""
    with gr.Blocks(title="zegformer-sdk demo", analytics_enabled=False, delete_cache=(1800, 3600)) as app:
        gr.Markdown(
            f"## zegformer-sdk — open-vocabulary segmentation\n`{seg.bundle.root.name}` · {seg.backend.describe()}"
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = readable_upload_errors(
                    gr,
                    gr.Image(
                        label="Image (upload or webcam snapshot)",
                        type="numpy",
                        sources=["upload", "webcam", "clipboard"],
                        height=IMAGE_HEIGHT,
                        elem_id="input-image",
                    ),
                )
                choice = gr.Dropdown(
                    [CUSTOM, *builtins],
                    value=default or CUSTOM,
                    label="Built-in vocabulary",
                    elem_id="builtin-vocabulary",
                )
                text = gr.Textbox(
                    h.vocabulary_text(default) if default else typed,
                    lines=4,
                    max_lines=12,
                    label="Vocabulary: names separated by ';' or one per line ('a, b' = synonyms)",
                    elem_id="vocabulary",
                )
                mode = gr.Radio(modes, value=seg.mode if seg.mode in modes else modes[0], label="Mode", elem_id="mode")
                alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay opacity", elem_id="alpha")
                button = gr.Button("Segment", variant="primary", elem_id="segment-button")
            with gr.Column(scale=1):
                out = gr.Image(
                    label="Overlay (click for the class under the cursor)",
                    format="png",
                    height=IMAGE_HEIGHT,
                    interactive=False,
                    elem_id="overlay",
                )
                read = gr.Markdown("Segment an image, then click the overlay.", elem_id="readout")
                legend = gr.HTML(elem_id="legend", js_on_load=None)
                with gr.Accordion("Timings", open=True):
                    timings = gr.HTML(elem_id="timings", js_on_load=None)
                files = gr.File(
                    label="Downloads: label map PNG (class indices), overlay and result JSON",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )
        state = gr.State(None, time_to_live=3600)
        outputs = [out, legend, timings, files, read, state]
        inputs = [image, choice, text, mode, alpha]
        for trigger in (button.click, text.submit):
            trigger(h.segment, inputs, outputs, concurrency_limit=concurrency, concurrency_id="segment", api_name=False)
        choice.change(h.vocabulary_text, choice, text, concurrency_limit=None, api_name=False)
        out.select(
            _with_event_data(h.read_class, gr.SelectData),
            [state],
            read,
            concurrency_limit=None,
            api_name=False,
            show_progress="hidden",
        )
    app.queue(max_size=64, default_concurrency_limit=concurrency)
    return app
