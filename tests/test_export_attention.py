"""The export-time attention (``export.attention``) computes what ``nn.MultiheadAttention`` does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from export.attention import ExportAttention, fusable_attention


def test_export_attention_equals_multihead_attention():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(48, 4, batch_first=True).eval()
    x = torch.randn(3, 10, 48)
    with torch.no_grad():
        want = mha(x, x, x, need_weights=False)[0]
        got = ExportAttention(mha, tokens=10)(x, x, x)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def test_masks_and_unpacked_projections_are_refused():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    with pytest.raises(ValueError, match="unmasked"):
        ExportAttention(mha, 4)(torch.zeros(1, 4, 8), None, None, attn_mask=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="batch-first"):
        ExportAttention(nn.MultiheadAttention(8, 2, batch_first=False), 4)


def test_swap_is_undone_and_a_non_vit_is_left_alone():
    from tests.sdk_helpers import tiny_model

    visual = tiny_model().clip.visual
    before = [b.attn for b in visual.transformer.resblocks]
    with fusable_attention(visual, 32):
        assert all(isinstance(b.attn, ExportAttention) for b in visual.transformer.resblocks)
    assert [b.attn for b in visual.transformer.resblocks] == before
    with fusable_attention(nn.Linear(2, 2), 32):  # no conv1 / resblocks: nothing to swap, no error
        pass


def test_exported_clip_image_has_no_per_block_shape_arithmetic(tmp_path_factory):
    import onnx

    from tests.sdk_helpers import shared_bundle

    model = onnx.load(str(shared_bundle(tmp_path_factory) / "clip_image.onnx"))
    ops = [n.op_type for n in model.graph.node]
    # the tiny CLIP: 2 blocks; one Shape (the class token's batch expand), none per block
    assert ops.count("Softmax") == 2 and ops.count("Shape") == 1 and ops.count("Reshape") == 3 * 2
