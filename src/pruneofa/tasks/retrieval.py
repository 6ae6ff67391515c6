"""Title -> summary retrieval with sentence embeddings: what sparse pre-training kept, scored without
any task teacher or head ("once for all": the encoder as it is).

Queries are the titles of the held-out summaries (the corpus's validation documents, split by
`split_documents` with the fixed split seed, as the LM stages hold them out), the candidates are
those summaries. Embeddings are computed as sentence-transformers does for a mean-pooling model:

    e(x) = sum_t m_t h_t / max(sum_t m_t, 1e-9)   h_t: last hidden state of token t, m_t: attention mask
    e(x) <- e(x) / ||e(x)||_2                    only if the model's modules.json has a Normalize module

(CLS pooling, e(x) = h_0, where the Pooling config asks for it). Similarity is the cosine
s(q, d) = e(q).e(d) / (||e(q)|| ||e(d)||). Query i with gold summary g_i has rank
r_i = #{j != g_i : s(q_i, d_j) >= s(q_i, d_g_i)} (ties count against the gold, so a model that embeds
every text alike scores 0), and recall@k = (1/n) sum_i [r_i < k].
"""

from __future__ import annotations

import inspect as pyinspect
import json
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from tqdm.auto import tqdm

from pruneofa.data.assets import resolve_model_path
from pruneofa.data.corpus import split_documents
from pruneofa.data.summaries import read_all
from pruneofa.errors import UserError
from pruneofa.models import load_config, load_tokenizer
from pruneofa.config.base import StrictModel
from pruneofa.modeldir import SentencePooling, is_sentence_transformers_dir, read_pooling
from pruneofa.runtime.encode import pool

KS = (1, 10)
MAX_SOURCE_HOPS = 8  # teacher -> prune -> transfer chains are 3 deep; the cap only stops a cycle


class RetrievalConfig(StrictModel):
    files: list[str] = Field(default_factory=lambda: ["offline/wiki-summaries"], min_length=1,
                             description='offline/wiki-summaries or JSON files laid out as {key: {"title", "extract"}}')
    validation_fraction: float = Field(0.05, gt=0.0, lt=0.5, description="held-out share, as the LM stages' data.*")
    split_seed: int = Field(0, description="seed of the held-out split (the LM stages' data.split_seed)")
    max_queries: int | None = Field(None, ge=1, description="keep the first N held-out articles: N queries, N candidates")
    max_seq_len: int = Field(256, ge=8, description="tokens per text (sentence-transformers' max_seq_length for MiniLM)")
    batch_size: int = Field(64, ge=1)


# --- data -----------------------------------------------------------------------------------------
def held_out_pairs(cfg: RetrievalConfig) -> list[tuple[str, str]]:
    """(title, summary) of the held-out documents, in the order split_documents returns them."""
    pairs = read_all(cfg.files, "retrieval.files")
    _, held = split_documents([text for _, text in pairs], cfg.validation_fraction, cfg.split_seed)
    # the split returns texts: give each one back its title (a repeated text takes the next unused one)
    titles: dict[str, deque[str]] = defaultdict(deque)
    for title, text in pairs:
        titles[text].append(title)
    held_pairs = [(titles[text].popleft(), text) for text in held][: cfg.max_queries]
    if len(held_pairs) < 2:
        raise UserError(f"only {len(held_pairs)} held-out summary for retrieval (of {len(pairs)} articles)",
                        "add articles or raise retrieval.validation_fraction / retrieval.max_queries")
    return held_pairs


# --- model ----------------------------------------------------------------------------------------
def _recorded_source(model_dir: Path) -> str | None:
    meta = model_dir / "pruneofa.json"
    try:
        return json.loads(meta.read_text()).get("recipe", {}).get("model") if meta.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None


def pooling_of(name: str) -> tuple[str, bool]:
    """(mode, normalize) from sentence-transformers' modules.json in the model dir, else in the model
    a pruneofa stage started from (pruneofa.json's recipe.model, followed back); ("mean", True) if none."""
    current: str | None = name
    for _ in range(MAX_SOURCE_HOPS):
        try:
            directory = Path(resolve_model_path(current))
        except UserError:  # a recorded source that has since been moved: fall back to the default
            break
        if is_sentence_transformers_dir(directory):
            pooling = read_pooling(directory)
            if pooling.mode not in ("mean", "cls"):
                raise UserError(f"'{name}' pools by {pooling.mode} (sentence-transformers' pooling in {directory})",
                                "this eval computes mean or CLS pooling: use a mean-pooling sentence encoder")
            return pooling.mode, pooling.normalize
        current = _recorded_source(directory)
        if current is None:
            break
    return "mean", True  # the cosine makes the ranking the same either way


def load_encoder(name: str, trust_remote_code: bool = False) -> torch.nn.Module:
    """The model's encoder without any head (an MLM, classification or QA dir, an asset or hub name)."""
    from transformers import AutoModel

    from pruneofa.modeldir import config_and_class, is_compact_dir, kind_of

    path = resolve_model_path(name)
    meta = Path(path) / "pruneofa.json"
    stage = json.loads(meta.read_text()).get("stage") if meta.is_file() else None
    if kind_of(path) == "qat" or stage == "quantize":
        raise UserError(f"'{name}' is a QAT dir: its float weights lack the int8 fake quantization it was trained with",
                        "score the model it was quantized from (its pruneofa.json recipe.model)")
    load_config(name, trust_remote_code)  # one-line errors for missing paths and non-model dirs
    try:
        if is_compact_dir(path):  # export --compact: pruneofa's own classes, heads and neurons removed
            config, model_class = config_and_class(path)
            model = model_class.from_pretrained(path, config=config).base_model
        else:
            model = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - safetensors, torch and transformers each raise their own types
        raise UserError(f"cannot load '{name}' as a transformers encoder ({type(err).__name__}: "
                        f"{(str(err).strip().splitlines() or [''])[0]})",
                        "pass a model dir written by pruneofa or save_pretrained, or an offline/* model") from None
    return model.eval()


# --- embeddings and recall --------------------------------------------------------------------------
@torch.no_grad()
def embed(model, tokenizer, texts: list[str], max_seq_len: int, batch_size: int, mode: str = "mean",
          normalize: bool = True, desc: str = "embed") -> torch.Tensor:
    """[len(texts), hidden] float32 embeddings, in the order of `texts`."""
    device = next(model.parameters()).device
    accepted = set(pyinspect.signature(model.forward).parameters)  # DistilBERT takes no token_type_ids
    # similar lengths share a batch (as sentence-transformers sorts): less padding, same embeddings
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", leave=False):
        rows = [texts[i].strip() for i in order[start:start + batch_size]]
        batch = tokenizer(rows, padding=True, truncation=True, max_length=max_seq_len, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items() if k in accepted}
        hidden = model(**batch).last_hidden_state.float()
        chunks.append(pool(hidden, batch["attention_mask"], SentencePooling(mode)))
    by_length = torch.cat(chunks).cpu()
    pooled = torch.empty_like(by_length)
    pooled[torch.tensor(order, dtype=torch.long)] = by_length  # back to the order of `texts`
    return F.normalize(pooled, p=2, dim=-1) if normalize else pooled


def gold_ranks(queries: torch.Tensor, docs: torch.Tensor, gold: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """r_i = #{j != g_i : cos(q_i, d_j) >= cos(q_i, d_g_i)}, computed a block of queries at a time."""
    q, d = F.normalize(queries.float(), dim=-1), F.normalize(docs.float(), dim=-1)
    ranks = []
    for start in range(0, len(q), batch_size):
        sims = q[start:start + batch_size] @ d.T
        gold_sims = sims.gather(1, gold[start:start + batch_size, None])
        ranks.append((sims >= gold_sims).sum(dim=1) - 1)  # - 1: the gold document itself
    return torch.cat(ranks)


def recall_at(ranks: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    return {f"recall@{k}": float((ranks < k).float().mean()) for k in ks}


def evaluate_retrieval(name: str, cfg: RetrievalConfig, trust_remote_code: bool = False) -> dict[str, Any]:
    """Recall@1/@10 of `name`'s encoder, searching the held-out summaries by their titles."""
    from pruneofa.modeldir import inspect_dir

    pairs = held_out_pairs(cfg)
    model = load_encoder(name, trust_remote_code)  # first: its errors name what is wrong with the model dir
    tokenizer = load_tokenizer(name, trust_remote_code)
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit and cfg.max_seq_len > limit:
        raise UserError(f"retrieval.max_seq_len={cfg.max_seq_len} exceeds the model's {limit} positions",
                        f"pass retrieval.max_seq_len<={limit}")
    mode, normalize = pooling_of(name)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    args = (cfg.max_seq_len, cfg.batch_size, mode, normalize)
    queries = embed(model, tokenizer, [title for title, _ in pairs], *args, desc="embed titles")
    docs = embed(model, tokenizer, [text for _, text in pairs], *args, desc="embed summaries")
    ranks = gold_ranks(queries, docs, torch.arange(len(pairs)))
    try:  # as `pruneofa inspect` reads it from the weights file; a hub name has none here
        sparsity = inspect_dir(resolve_model_path(name))["overall"]
    except UserError:
        sparsity = None
    return {"kind": "retrieval", **recall_at(ranks), "mean_rank": float(ranks.float().mean() + 1),
            "n_queries": len(pairs), "n_documents": len(pairs), "sparsity": sparsity, "pooling": mode,
            "normalize": normalize, "max_seq_len": cfg.max_seq_len, "split_seed": cfg.split_seed,
            "validation_fraction": cfg.validation_fraction, "files": cfg.files,
            "seconds": round(time.perf_counter() - started, 2)}
