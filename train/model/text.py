"""Text embeddings of class names with prompt ensembles, as the official ``zeroshot_classifier``.

For each class every template is formatted with the name (a name ``"a, b"`` is split into
synonyms, giving a template-major list), tokenised, encoded, L2-normalised, averaged, and the
mean is L2-normalised again.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from .clip import encode_text

SYNONYM_SEPARATOR = ", "


def expand_prompts(names: Sequence[str], templates: Sequence[str]) -> Tuple[List[str], List[int]]:
    """All prompts and, for each, the index of the class it belongs to."""
    if len(names) == 0:
        raise ValueError("the vocabulary is empty: give at least one class name")
    prompts, owner = [], []
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"class name #{i} is empty or not a string: {name!r}")
        splits = name.split(SYNONYM_SEPARATOR) if SYNONYM_SEPARATOR in name else [name]
        texts = [t.format(s) for t in templates for s in splits]
        prompts += texts
        owner += [i] * len(texts)
    return prompts, owner


def tokenize(prompts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """open_clip's CLIP BPE tokenizer (the same ids as the official ``clip.tokenize``)."""
    import open_clip

    return open_clip.tokenize(list(prompts), context_length=context_length)


def pool_class_embeddings(raw: torch.Tensor, owner: Sequence[int], num_classes: int) -> torch.Tensor:
    """Normalise each prompt embedding, average per class, normalise the mean → ``[K,D]``."""
    raw = raw / raw.norm(dim=-1, keepdim=True)
    owner_t = torch.as_tensor(owner)
    out = []
    for k in range(num_classes):
        mean = raw[owner_t == k].mean(dim=0)
        out.append(mean / mean.norm())
    return torch.stack(out)


@torch.no_grad()
def class_text_embeddings(clip: nn.Module, names: Sequence[str], templates: Sequence[str],
                          batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Text embeddings ``[K,D]`` (float32) of ``names`` under the prompt ensemble ``templates``."""
    prompts, owner = expand_prompts(names, templates)
    tokens = tokenize(prompts, clip.positional_embedding.shape[0])
    device = clip.positional_embedding.device
    chunks = range(0, len(prompts), batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="text embeddings", unit="batch")
    raw = torch.cat([encode_text(clip, tokens[i:i + batch_size].to(device)).float() for i in chunks])
    return pool_class_embeddings(raw, owner, len(names))
