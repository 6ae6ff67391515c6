"""Plain transformers checkpoint: masks folded, fake quantization removed, safetensors.

A QAT model is written with its dequantized weights q · s, so the float checkpoint has exactly the
weights the int8 model computes with (activations are not quantized in it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from pruneofa.modeldir import copy_sentence_transformers_files, load_model, write_tokenizer
from pruneofa.quantization.checkpoint import plain_model_copy


def export_hf(model_or_dir: nn.Module | str | Path, out_dir: str | Path, tokenizer: Any = None) -> Path:
    """Write `out_dir/config.json` + `model.safetensors` (+ tokenizer, + the sentence-transformers files
    of a sentence-transformers input), loadable by `from_pretrained` (or `SentenceTransformer`) without
    pruneofa. Returns `out_dir`."""
    model, source_dir = load_model(model_or_dir)
    out = Path(out_dir)
    plain_model_copy(model, keep_quantized_values=True).save_pretrained(out)
    write_tokenizer(out, tokenizer, source_dir)
    copy_sentence_transformers_files(source_dir, out)  # a sentence-transformers input stays one
    return out
