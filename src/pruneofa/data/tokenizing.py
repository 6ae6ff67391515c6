"""Tokenizing a corpus source once, in parallel, into arrow files on disk (`datasets.map` with `num_proc`).

The ids are stored in the cache's integer type (uint16 for vocabularies up to 65,536), so the arrow
files, and later the packing, stay small; the files live in the caller's build directory and go with it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from pruneofa.data.corpus import CorpusConfig, Source, clean_documents, read_source


def tokenize_source(source: Source, cfg: CorpusConfig, tokenizer: PreTrainedTokenizerBase, workdir: Path, processes: int,
               dtype: np.dtype):
    """The source's non-blank documents as token ids (arrow on disk under `workdir`)."""
    import datasets

    texts = read_source(source, cfg, workdir)
    paragraphs = source.paragraphs

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        docs = clean_documents(batch["text"], paragraphs)
        return {"input_ids": tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []}

    features = datasets.Features({"input_ids": datasets.List(datasets.Value(np.dtype(dtype).name))})
    return texts.map(tokenize, batched=True, batch_size=1000, num_proc=processes if processes > 1 else None,
                     remove_columns=texts.column_names, features=features, load_from_cache_file=False,
                     new_fingerprint=uuid.uuid4().hex, desc=f"tokenize {Path(source.name).name}")
