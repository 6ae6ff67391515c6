"""Representation distillation: the student matches the teacher's hidden states and attention.

Notation. h^i [batch, tokens, width] is hidden state i of a model: h^0 the embedding output, h^i the
output of layer i (transformers' `hidden_states[i]`). A^i [batch, heads, queries, keys] is the
attention distribution of layer i (`attentions[i - 1]`). m ∈ {0, 1}^[batch, tokens] is the attention
mask: only its tokens count, as positions and, through the models' own masking, as keys. P is the
set of (student index, teacher index) pairs that are matched. e = Σ_n m_n h^L[n] / Σ_n m_n is a
sequence's mean-pooled last hidden state: the sentence embedding of sentence-transformers' models.

A student of another depth is matched through a layer map j(i) (`layer_map`), by default the uniform
one of TinyBERT: the embeddings to the embeddings, the last layer to the last, the rest spread evenly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pruneofa.errors import UserError
from pruneofa.token_loss import IGNORE


def layer_map(student_layers: int, teacher_layers: int,
              explicit: Sequence[int | None] | None = None) -> list[int | None]:
    """j(i), the teacher hidden-state index matched to student hidden state i = 0..L_s (None: unmatched).

    `explicit` (distill.hidden_layers) when given, else the uniform map j(i) = ⌊i·L_t / L_s⌋: a 2-layer
    student of a 4-layer teacher matches 0→0, 1→2, 2→4.
    """
    if explicit is None:
        return [i * teacher_layers // student_layers for i in range(student_layers + 1)]
    if len(explicit) != student_layers + 1:
        raise UserError(f"distill.hidden_layers has {len(explicit)} entries for the student's {student_layers + 1} "
                        f"hidden states (embeddings + {student_layers} layers)",
                        f"list one teacher index (0..{teacher_layers}) or null per student hidden state")
    for j in explicit:
        if j is not None and not 0 <= j <= teacher_layers:
            raise UserError(f"distill.hidden_layers maps to teacher hidden state {j}, "
                            f"the teacher has 0..{teacher_layers}",
                            f"use teacher indices 0 (embeddings) to {teacher_layers} (last layer)")
    return list(explicit)


def hidden_pairs(mapping: Sequence[int | None]) -> list[tuple[int, int]]:
    """(student, teacher) hidden-state index pairs of a layer map."""
    return [(i, j) for i, j in enumerate(mapping) if j is not None]


def attention_pairs(mapping: Sequence[int | None], layers: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs of the attention term: each of `layers` (1..L_s, default the
    last) with the teacher layer that its output hidden state is mapped to."""
    student_layers = len(mapping) - 1
    pairs = []
    for i in layers if layers is not None else [student_layers]:
        if not 1 <= i <= student_layers:
            raise UserError(f"distill.attention_layers has layer {i}, the student has layers 1..{student_layers}",
                            f"pick student layers between 1 and {student_layers}")
        if not mapping[i]:  # None, or the embeddings, which have no attention
            raise UserError(f"distill.attention_layers has student layer {i}, which distill.hidden_layers maps to "
                            f"{'no teacher layer' if mapping[i] is None else 'the teacher embeddings'}",
                            "map that student layer to a teacher layer (1 or more) in distill.hidden_layers")
        pairs.append((i, mapping[i]))
    return pairs


def check_same(what: str, student: int, teacher: int, key: str) -> None:
    if student != teacher:
        raise UserError(f"distill.{key} needs the student's {what} to equal the teacher's ({student} vs {teacher})",
                        f"distill from a teacher whose {what} is {student}, or set distill.{key}=0")


def _token_weights(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """m as float [batch, tokens]; all ones without a mask."""
    return torch.ones(like.shape[:2], device=like.device) if mask is None else mask.to(like.device, torch.float32)


def scaled_hidden_state_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                             pairs: Sequence[tuple[int, int]], mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-layer squared error, each layer's divided by the teacher layer's mean square:

        L_hid = 1/|P| · Σ_{(i,j) ∈ P}  Σ_{b,n} m_bn ‖h_s^i[b,n] − h_t^j[b,n]‖² / Σ_{b,n} m_bn ‖h_t^j[b,n]‖²

    that is the mean squared error over the counted tokens and the width divided by the teacher's mean
    squared value there: 0 for a perfect match, 1 for a student that outputs zeros, whatever the
    scale of the layer, so that no layer dominates and values compare across models.
    """
    losses = []
    for i, j in pairs:
        h_s, h_t = student_hidden[i].float(), teacher_hidden[j].float().detach()
        check_same("hidden width", h_s.shape[-1], h_t.shape[-1], "alpha_hidden")
        m = _token_weights(mask, h_s)
        error = ((h_s - h_t).pow(2).sum(-1) * m).sum()
        scale = (h_t.pow(2).sum(-1) * m).sum().clamp_min(torch.finfo(torch.float32).tiny)
        losses.append(error / scale)
    return torch.stack(losses).mean()


def attention_kl(student_attentions: Sequence[torch.Tensor], teacher_attentions: Sequence[torch.Tensor],
                 pairs: Sequence[tuple[int, int]], mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher attention ‖ student attention), as MiniLM distils self-attention (Wang et al. 2020):

        L_att = 1/|P| · Σ_{(i,j) ∈ P}  Σ_{b,q} m_bq · (1/H) Σ_h KL_bhq  /  Σ_{b,q} m_bq
        KL_bhq = Σ_k A_t^j[b,h,q,k] · (log A_t^j[b,h,q,k] − log A_s^i[b,h,q,k])

    per head and query position, summed over the keys, averaged over the heads and the counted
    (non-padding) queries, then over the layer pairs P (1-based layers). Padded keys, and a causal
    model's future keys, have probability 0 in both distributions and add nothing (0·log 0 = 0).
    """
    losses = []
    for i, j in pairs:
        a_s, a_t = student_attentions[i - 1].float(), teacher_attentions[j - 1].float().detach()
        check_same("number of attention heads", a_s.shape[1], a_t.shape[1], "alpha_attention")
        # clamped so that a key at probability 0 gives 0 gradient, not 0·∞; its teacher weight is 0 anyway
        log_ratio = torch.log(a_t.clamp_min(torch.finfo(torch.float32).tiny)) - torch.log(
            a_s.clamp_min(torch.finfo(torch.float32).tiny))
        per_query = (a_t * log_ratio).sum(-1).mean(1)  # [batch, queries]
        m = _token_weights(mask, per_query)
        losses.append((per_query * m).sum() / m.sum().clamp_min(1.0))
    return torch.stack(losses).mean()


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """e[b] = Σ_n m_bn h[b,n] / Σ_n m_bn: each sequence's mean over its counted tokens, as
    sentence-transformers pools (and `pruneofa.runtime.encode` with it)."""
    m = _token_weights(mask, hidden).to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def sentence_embedding_loss(student_last: torch.Tensor, teacher_last: torch.Tensor,
                            mask: torch.Tensor | None = None) -> torch.Tensor:
    """One minus the cosine between the student's and the teacher's sentence embeddings, over the batch:

        L_sent = 1/B · Σ_b (1 − cos(e_s[b], e_t[b]))

    Cosine, not squared error, because retrieval compares L2-normalised embeddings: only their
    direction counts. 0 when the student's embeddings point where the teacher's do, 1 when orthogonal.
    """
    check_same("hidden width", student_last.shape[-1], teacher_last.shape[-1], "alpha_sentence")
    e_s, e_t = mean_pooled(student_last.float(), mask), mean_pooled(teacher_last.float().detach(), mask)
    return mean_cosine_distance(e_s, e_t)


def relational_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL between the teacher's and the student's in-batch similarity distributions of sentence embeddings:

        p[b] = softmax_{c ≠ b}(cos(e[b], e[c]) / τ),   L_rel = 1/B · Σ_b KL(p_t[b] ‖ p_s[b])

    Retrieval ranks documents by these similarities; 1 − cos per embedding bounds how far each one
    moves, not how the batch's ranking changes. Needs no equal widths (only similarities are compared).
    """
    batch = student_emb.shape[0]
    if batch < 3:  # a row needs two others to rank
        return student_emb.sum() * 0.0
    others = ~torch.eye(batch, dtype=torch.bool, device=student_emb.device)

    def log_p(emb: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.normalize(emb.float(), dim=-1)
        return torch.log_softmax((z @ z.T / temperature)[others].view(batch, batch - 1), dim=-1)

    return torch.nn.functional.kl_div(log_p(student_emb), log_p(teacher_emb.detach()), log_target=True,
                                      reduction="batchmean")


def first_token_loss(student_last: torch.Tensor, teacher_last: torch.Tensor) -> torch.Tensor:
    """One minus the cosine between the student's and the teacher's last hidden state at position 0
    (an encoder's [CLS], which a classification head's pooler reads), over the batch:

        L_cls = 1/B · Σ_b (1 − cos(h_s[b, 0], h_t[b, 0]))

    The MLM loss never reads position 0, and the mean-pooled sentence term reads it at weight 1/n;
    this term trains it directly. (On masked LM blocks it did not make the sparse students' [CLS]
    state on short sentence pairs any more input-dependent: docs/RESULTS.md, session 11.)
    """
    check_same("hidden width", student_last.shape[-1], teacher_last.shape[-1], "alpha_cls")
    return mean_cosine_distance(student_last[:, 0].float(), teacher_last[:, 0].float().detach())


def mean_cosine_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1/B · Σ_b (1 − cos(student[b], teacher[b])) over the rows of two [B, width] tensors."""
    return (1.0 - torch.nn.functional.cosine_similarity(student, teacher, dim=-1)).mean()


def clean_spans(input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor,
                lengths: tuple[int, int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Short unmasked texts cut from a masked-LM batch, for the sentence term (`distill.sentence_inputs: spans`).

    Row b's original tokens (its label where a token was masked) from a random offset, k ~ U[lo, hi]
    of them (fewer when the row is shorter), framed by the row's own first and last tokens (a packed
    block's [CLS] and [SEP]): sentence-length inputs as a sentence encoder sees them at inference,
    where the LM blocks are 128 masked tokens. Returns (ids, attention mask), right-padded with 0.
    """
    original = torch.where(labels != IGNORE, labels, input_ids)
    lo, hi = lengths
    spans = []
    for row, n_real in zip(original, attention_mask.sum(1).tolist()):
        inner = max(n_real - 2, 1)  # the tokens between the frame
        k = int(torch.randint(min(lo, inner), min(hi, inner) + 1, (), generator=generator))
        start = 1 + int(torch.randint(0, inner - k + 1, (), generator=generator))
        spans.append(torch.cat([row[:1], row[start:start + k], row[n_real - 1:n_real]]))
    width = max(len(span) for span in spans)
    ids = input_ids.new_zeros(len(spans), width)
    mask = torch.zeros_like(ids)
    for b, span in enumerate(spans):
        ids[b, :len(span)], mask[b, :len(span)] = span, 1
    return ids, mask
