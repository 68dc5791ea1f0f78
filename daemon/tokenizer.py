"""SAM3's text tokenizer: CLIP BPE read from the files ComfyUI ships in comfy/sd1_tokenizer (nothing downloads)."""
from __future__ import annotations

import os
import threading

import torch

CONTEXT_LENGTH = 32
_lock = threading.Lock()
_cache: dict[str, object] = {}


def bpe_folder() -> str:
    """The folder of ComfyUI's CLIP vocab.json and merges.txt."""
    import comfy

    return os.path.join(os.path.realpath(list(comfy.__path__)[0]), "sd1_tokenizer")


def clip_tokenizer(folder: str | None = None):
    """The transformers CLIPTokenizer of `folder` (ComfyUI's sd1_tokenizer by default), built once per process."""
    folder = folder or bpe_folder()
    with _lock:
        tok = _cache.get(folder)
        if tok is None:
            missing = [f for f in ("vocab.json", "merges.txt") if not os.path.isfile(os.path.join(folder, f))]
            if missing:
                raise FileNotFoundError(f"CLIP tokenizer files {missing} not found in {folder}; SAM3 reads the BPE "
                                        f"vocabulary that ComfyUI ships in comfy/sd1_tokenizer (reinstall ComfyUI).")
            from transformers import CLIPTokenizer

            tok = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
            _cache[folder] = tok
    return tok


def tokenize(prompts: list[str], context_length: int = CONTEXT_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each [len(prompts), context_length]: Sam3Processor's padding to 32, truncated there."""
    tok = clip_tokenizer()
    with _lock:
        enc = tok(list(prompts), padding="max_length", max_length=context_length, truncation=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]
