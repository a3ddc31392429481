"""The four ONNX graphs: thin wrappers around the model's own methods, traced and simplified.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. It is still shipped
(deprecated) in torch 2.14 and gives clean dynamic graphs here: batch, height and width stay
symbolic (``Shape``-driven ``Resize`` sizes, ``CumSum`` sine positions), verified by running the
graphs at sizes other than the trace size. The dynamo exporter was tried on the proposal graph:
it specialised the traced batch size 1 to a constant (0/1 specialisation), needs symbolic size
constraints (``H = 32·h``), emits ``Split`` nodes it cannot fold and took ~10× longer.

Simplification: ONNX Runtime's *basic* offline graph optimisation (constant folding, redundant
node elimination, Conv+Mul/Add folding — standard ONNX ops only), then unused opset imports are
dropped, the declared output shapes fixed and the model checked with ``onnx.checker``.

The CLIP image graph's attention is traced through ``export.attention`` (one QKV MatMul, constant
reshapes, one scale): the same numbers (≤ 1e-7) with 86 instead of 662 constants and no
Shape/Gather/Concat per block, ~5 % faster on ONNX Runtime's CPU provider.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Dict, Iterator, List, Sequence, Tuple, Union

import torch
from torch import nn

from train.model import ZegFormer
from train.model.clip import encode_text

from .attention import fusable_attention, text_attention
from .dense_clip import DenseClipGraph

log = logging.getLogger(__name__)
Dim = Union[int, str]
DEFAULT_OPSET = 17  # first opset with LayerNormalization (→ TensorRT INormalizationLayer)
SUPPORTED_OPSETS = range(17, 21)
TEXT_LENGTH = "L"  # the text graph's dynamic sequence axis (sdk.text_batches reads it from the manifest)


class ProposalGraph(nn.Module):
    """Padded RGB 0..255 ``[B,3,H,W]`` → mask logits ``[B,Q,H/4,W/4]``, segment embeddings ``[B,Q,D]``."""

    def __init__(self, model: ZegFormer):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.model.proposals(self.model.normalize(image))
        return out["pred_masks"], out["segment_embeddings"]


class ClipImageGraph(nn.Module):
    """CLIP-normalised crops ``[N,3,S,S]`` → L2-normalised embeddings ``[N,D]``."""

    def __init__(self, model: ZegFormer):
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.model.encode_crops(crops)


class ClipTextGraph(nn.Module):
    """int32 token ids ``[T,L]`` (``L`` ≤ 77, dynamic) → raw text embeddings ``[T,D]`` (int32 ArgMax pooling).

    Positions and the causal mask are sliced to ``L`` in the graph, so the SDK runs each batch cut
    at its longest end-of-text position (exact: causal attention, end-of-text pooling).
    """

    def __init__(self, model: ZegFormer):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return encode_text(self.model.clip, tokens)


@dataclass
class GraphSpec:
    """How one graph is traced and what the manifest says about it."""

    name: str
    module: nn.Module
    example: Tuple[torch.Tensor, ...]
    inputs: Dict[str, List[Dim]]
    outputs: Dict[str, List[Dim]]
    dynamic: Dict[str, Dict[int, str]] = field(default_factory=dict)
    trace_context: Callable[[], ContextManager] = nullcontext  # entered around the trace only

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    def manifest_entry(self) -> Dict[str, object]:
        fmt = lambda dims: "[" + ",".join(str(d) for d in dims) + "]"  # noqa: E731
        return {
            "file": self.file,
            "inputs": {k: fmt(v) for k, v in self.inputs.items()},
            "outputs": {k: fmt(v) for k, v in self.outputs.items()},
        }


def graph_specs(model: ZegFormer, image_size: Sequence[int], dense_size: Sequence[int]) -> List[GraphSpec]:
    """The four graphs of the bundle, with their trace inputs and dynamic axes."""
    cfg = model.cfg
    q, d, s, ctx = cfg.num_queries, cfg.embed_dim, cfg.crop_size, cfg.clip.context_length
    h, w = int(image_size[0]), int(image_size[1])
    hd, wd = int(dense_size[0]), int(dense_size[1])
    p = cfg.clip.patch_size
    stride = cfg.mask_stride
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, cfg.clip.vocab_size - 1, (2, ctx), generator=gen, dtype=torch.int32)
    return [
        GraphSpec(
            "proposal",
            ProposalGraph(model),
            (torch.rand(2, 3, h, w, generator=gen) * 255,),
            {"image": ["B", 3, "H", "W"]},
            {"mask_logits": ["B", q, f"H/{stride}", f"W/{stride}"], "segment_embeddings": ["B", q, d]},
            {
                "image": {0: "B", 2: "H", 3: "W"},
                "mask_logits": {0: "B", 2: f"H/{stride}", 3: f"W/{stride}"},
                "segment_embeddings": {0: "B"},
            },
        ),
        GraphSpec(
            "clip_image",
            ClipImageGraph(model),
            (torch.randn(2, 3, s, s, generator=gen),),
            {"crops": ["N", 3, s, s]},
            {"embeddings": ["N", d]},
            {"crops": {0: "N"}, "embeddings": {0: "N"}},
            trace_context=lambda: fusable_attention(model.clip.visual, s),
        ),
        text_spec(model, tokens),
        GraphSpec(
            "clip_dense",
            DenseClipGraph(model.clip, (hd, wd)),
            (torch.randn(1, 3, hd, wd, generator=gen),),
            {"image": [1, 3, hd, wd]},
            {"features": [1, d, hd // p, wd // p]},
        ),
    ]


def text_spec(model: ZegFormer, tokens: torch.Tensor, dynamic_length: bool = True) -> GraphSpec:
    """The text graph: token ids ``[T,L]`` with a dynamic length ``L`` (``dynamic_length=False``: the
    fixed ``[T,77]`` graph older bundles have, kept to test that they still work)."""
    length = TEXT_LENGTH if dynamic_length else tokens.shape[1]
    axes = {0: "T", 1: TEXT_LENGTH} if dynamic_length else {0: "T"}
    return GraphSpec(
        "clip_text",
        ClipTextGraph(model),
        (tokens,),
        {"tokens": ["T", length]},
        {"embeddings": ["T", model.cfg.embed_dim]},
        {"tokens": axes, "embeddings": {0: "T"}},
        trace_context=(lambda: text_attention(model.clip)) if dynamic_length else nullcontext,
    )


@contextmanager
def _tracing_mode() -> Iterator[None]:
    """No autograd, no fused MHA fast path (not exportable), the known exporter warnings muted."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            # open_clip's end-of-text pooling indexes with arange/argmax: never negative.
            warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def trace_to_onnx(spec: GraphSpec, path: Path, opset: int) -> None:
    """Trace ``spec.module`` with the TorchScript exporter into ``path`` (unsimplified)."""
    spec.module.eval()  # export restores the training flag it finds: make that "eval"
    with _tracing_mode(), spec.trace_context():
        torch.onnx.export(
            spec.module,
            spec.example,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_axes=spec.dynamic or None,
            do_constant_folding=True,
        )
    spec.module.eval()


def _set_dims(value_info, dims: Sequence[Dim]) -> None:
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = d


def simplify(src: Path, dst: Path, spec: GraphSpec) -> None:
    """ORT basic-level offline optimisation, then clean-up and ``onnx.checker``."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    model = onnx.load(str(dst))
    used = {n.domain for n in model.graph.node}
    keep = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    for vi in model.graph.output:
        _set_dims(vi, spec.outputs[vi.name])
    for vi in model.graph.input:
        _set_dims(vi, spec.inputs[vi.name])
    model.producer_name = "zegformer-sdk export"
    onnx.helper.set_model_props(model, {"graph": spec.name})
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def export_graph(spec: GraphSpec, out_dir: Path, opset: int) -> Path:
    """Trace and simplify one graph into ``out_dir / spec.file``."""
    dst = Path(out_dir) / spec.file
    with tempfile.TemporaryDirectory(prefix="zegformer-onnx-") as tmp:
        raw = Path(tmp) / spec.file
        trace_to_onnx(spec, raw, opset)
        simplify(raw, dst, spec)
    log.info("exported %s (%.1f MB)", spec.file, dst.stat().st_size / 1e6)
    return dst


def export_graphs(
    specs: Sequence[GraphSpec], out_dir: Path, opset: int = DEFAULT_OPSET, progress: bool = True
) -> Dict[str, Dict[str, object]]:
    """Export every graph; returns the manifest's ``graphs`` entry."""
    from tqdm import tqdm

    for spec in tqdm(specs, desc="ONNX graphs", unit="graph", disable=not progress):
        export_graph(spec, out_dir, opset)
    return {spec.name: spec.manifest_entry() for spec in specs}
