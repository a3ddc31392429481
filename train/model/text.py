"""Text embeddings of class names with prompt ensembles, as the official ``zeroshot_classifier``.

The prompts come from ``sdk.prompts.expand_prompts`` (the one definition of the rule); the
pooling here is the torch twin of ``sdk.prompts.pool_class_embeddings`` (kept on the model's
device; tested against it): L2-normalise each prompt embedding, average per class, normalise.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from sdk.prompts import expand_prompts

from .clip import encode_text


def tokenize(prompts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """open_clip's CLIP BPE tokenizer (the same ids as the official ``clip.tokenize``)."""
    import open_clip

    return open_clip.tokenize(list(prompts), context_length=context_length)


def pool_class_embeddings(raw: torch.Tensor, owner: Sequence[int], num_classes: int) -> torch.Tensor:
    """Normalise each prompt embedding, average per class, normalise the mean → ``[K,D]`` (torch twin)."""
    raw = raw / raw.norm(dim=-1, keepdim=True)
    owner_t = torch.as_tensor(owner)
    out = []
    for k in range(num_classes):
        mean = raw[owner_t == k].mean(dim=0)
        out.append(mean / mean.norm())
    return torch.stack(out)


@torch.no_grad()
def class_text_embeddings(
    clip: nn.Module, names: Sequence[str], templates: Sequence[str], batch_size: int = 256, progress: bool = False
) -> torch.Tensor:
    """Text embeddings ``[K,D]`` (float32) of ``names`` under the prompt ensemble ``templates``."""
    prompts, owner = expand_prompts(names, templates)
    tokens = tokenize(prompts, clip.positional_embedding.shape[0])
    device = clip.positional_embedding.device
    chunks = range(0, len(prompts), batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="text embeddings", unit="batch")
    raw = torch.cat([encode_text(clip, tokens[i : i + batch_size].to(device)).float() for i in chunks])
    return pool_class_embeddings(raw, owner, len(names))
