"""Loading models for a language-modelling objective, with clear errors for bad paths.

The objective follows the model: encoders (BERT, DistilBERT, RoBERTa, ...) train with masked LM,
decoders (GPT-2 style) with causal LM. A checkpoint without an LM head (the offline MiniLM is a
bare `BertModel`) gets a freshly initialised one, which the teacher stage then trains.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from pruneofa.data.assets import resolve_model_path
from pruneofa.errors import UserError

log = logging.getLogger(__name__)

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def is_causal_lm(config: PretrainedConfig) -> bool:
    """Decoder-only models (GPT-2, Llama, ...) train with causal LM; everything else with masked LM."""
    if getattr(config, "is_encoder_decoder", False):
        return False
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(CAUSAL_SUFFIXES) for a in archs):
        return True
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def load_config(name_or_path: str, trust_remote_code: bool = False, role: str = "model") -> PretrainedConfig:
    path = resolve_model_path(name_or_path, role)
    if Path(path).exists() and not (Path(path) / "config.json").is_file():
        raise UserError(f"'{name_or_path}' is not a transformers model (no config.json)",
                        "point model= at a directory written by save_pretrained or a pruneofa stage")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        if not Path(path).exists():
            raise UserError(f"model '{name_or_path}' not found locally and could not be fetched",
                            "pass an existing model directory (or a hub name when online)") from None
        raise UserError(f"cannot read model config at '{name_or_path}': {str(err).splitlines()[0]}",
                        "check the model directory") from None


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    path = resolve_model_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"no tokenizer at '{name_or_path}': {str(err).splitlines()[0]}",
                        "the model directory needs its tokenizer files") from None
    if tok.pad_token is None:  # GPT-2 has none; pad with EOS and mask it out with the attention mask
        tok.pad_token = tok.eos_token
    return tok


def load_lm(name_or_path: str, trust_remote_code: bool = False, role: str = "model", **kwargs: Any) -> PreTrainedModel:
    """The model with an LM head for its objective; a missing head is created (and logged).

    `role` ("model" or "teacher") names the recipe key in error messages.
    """
    return load_lm_and_new_keys(name_or_path, trust_remote_code, role, **kwargs)[0]


def load_lm_and_new_keys(name_or_path: str, trust_remote_code: bool = False, role: str = "model",
                         **kwargs: Any) -> tuple[PreTrainedModel, list[str]]:
    """`load_lm`, and the names of the tensors it created because the checkpoint lacks them (a new LM head)."""
    config = load_config(name_or_path, trust_remote_code, role)
    auto = AutoModelForCausalLM if is_causal_lm(config) else AutoModelForMaskedLM
    try:
        model, info = auto.from_pretrained(
            resolve_model_path(name_or_path, role), trust_remote_code=trust_remote_code, output_loading_info=True,
            use_safetensors=True, **kwargs
        )
    except Exception as err:  # noqa: BLE001 - safetensors, torch and transformers each raise their own types
        raise UserError(f"cannot load model '{name_or_path}' ({type(err).__name__}: {str(err).splitlines()[0]})",
                        "the weights are corrupted, truncated or do not match config.json: re-export them") from None
    new_keys = sorted(info.get("missing_keys") or [])
    if new_keys:
        log.info("created %d new LM-head tensors (e.g. %s)", len(new_keys), new_keys[0])
    return model, new_keys


def check_same_vocab(student: PreTrainedModel, teacher: PreTrainedModel) -> None:
    s, t = student.get_output_embeddings(), teacher.get_output_embeddings()
    s_n = s.weight.shape[0] if s is not None else student.config.vocab_size
    t_n = t.weight.shape[0] if t is not None else teacher.config.vocab_size
    if s_n != t_n:
        raise UserError(f"teacher and student have different vocabularies ({t_n} vs {s_n} tokens)",
                        "distill from a teacher with the student's tokenizer (e.g. the teacher stage's output)")
