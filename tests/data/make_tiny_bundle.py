"""Rebuild ``tests/data/tiny_bundle`` (needs torch and onnx): ``python tests/data/make_tiny_bundle.py``.

The tiny test model (``tests/sdk_helpers.tiny_model``, token table from
``tests/tiny_bundle.token_table``) is exported. Then every large weight tensor of the graphs
becomes ONNX external data with pseudo-random values of the same mean and std (the token table
keeps its own, exact values, so the bundle's vocabulary embeddings stay true to ``clip_text.onnx``);
the recipe goes to ``tests/data/tiny_bundle_weights.json`` and the regenerable files are removed.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
MIN_ELEMENTS = 1024  # smaller tensors stay inside the graph


def externalise(path: Path, seed0: int, token_shape) -> list:
    """Replace the large float tensors of ``path`` by recipe tensors stored in ``<graph>.weights.bin``."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from tests.tiny_bundle import tensor

    model = onnx.load(str(path))
    location = f"{path.stem}.weights.bin"
    entries, offset = [], 0
    for i, t in enumerate(model.graph.initializer):
        if t.data_type != onnx.TensorProto.FLOAT or int(np.prod(t.dims)) < MIN_ELEMENTS:
            continue
        value = numpy_helper.to_array(t)
        if not np.isfinite(value).all() or (path.stem == "clip_text" and tuple(t.dims) != tuple(token_shape)):
            continue  # masks with -inf; the text tower keeps its weights (the vocabularies depend on them)
        if tuple(t.dims) == tuple(token_shape):
            entry = {"shape": list(t.dims), "mean": 0.0, "std": 0.02, "seed": 1}  # token_table()
            assert (tensor(entry) == value).all(), "the token table is not token_table()"
        else:
            entry = {"shape": list(t.dims), "mean": float(value.mean()), "std": float(value.std()), "seed": seed0 + i}
        entry["offset"] = offset
        data = tensor(entry).tobytes()
        t.ClearField("float_data")
        t.raw_data = data
        onnx.external_data_helper.set_external_data(t, location, offset, len(data))
        entries.append(entry)
        offset += (len(data) + 63) // 64 * 64
    onnx.save(model, str(path))
    return entries


def main() -> None:
    import torch

    from sdk.bundle_format import MANIFEST, TOKENIZER_VOCAB
    from sdk.manifest import write_manifest
    from tests.sdk_helpers import NAMES, SEEN, export_bundle, tiny_model
    from tests.tiny_bundle import DATA, RECIPE, token_table, write_weights
    from train.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tiny_model()
        table = token_table()
        with torch.no_grad():
            model.clip.token_embedding.weight.copy_(torch.from_numpy(table))
        save_checkpoint(tmp / "tiny.pth", model, NAMES, SEEN)
        bundle = export_bundle(tmp / "tiny.pth", tmp / "bundle")
        recipe = {}
        for seed0, graph in enumerate(("proposal", "clip_image", "clip_text", "clip_dense")):
            recipe[f"{graph}.weights.bin"] = externalise(bundle / f"{graph}.onnx", 1000 * (seed0 + 1), table.shape)
        check = tmp / "check"
        check.mkdir()
        write_weights(check, recipe)
        for file in recipe:
            assert (check / file).read_bytes() == (bundle / file).read_bytes(), f"{file} is not reproducible"
        manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
        manifest["checkpoint"] = {}  # the checkpoint is not part of the test data
        write_manifest(bundle, manifest)
        for name in [*recipe, TOKENIZER_VOCAB]:
            (bundle / name).unlink()
        if DATA.exists():
            shutil.rmtree(DATA)
        shutil.copytree(bundle, DATA)
        RECIPE.write_text(json.dumps(recipe, indent=1) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file()) + RECIPE.stat().st_size
    print(f"wrote {DATA} and {RECIPE.name}: {size // 1024} KiB")


if __name__ == "__main__":
    main()
