"""Compaction: structurally pruned models rebuilt smaller, equal outputs, reloadable without pruneofa."""

import json
import os
import subprocess
import sys

import pytest
import torch
import transformers

from pruneofa import Pruner
from pruneofa.cli import main
from pruneofa.errors import UserError
from pruneofa.export.compact import compact_model, export_compact_hf
from pruneofa.modeldir import is_compact_dir
from pruneofa.modeldir import load_plain as load_model_dir
from pruneofa.sparsity.masks import fold_masks
from tests.conftest import ENCODER_FAMILIES, tiny_config

FAMILIES = ["bert", "distilbert", "roberta", "gpt2", *ENCODER_FAMILIES]
FFN_ONLY, WITH_HEADS = dict(ffn_sparsity=0.5, head_sparsity=0.0), dict(ffn_sparsity=0.75, head_sparsity=0.5)
# tiny models (conftest): width 32, 4 heads of 8, 2 blocks; FFN 64, GPT-2's 4 x 32
FFN_WIDTH = {"gpt2": 128}
FFN_KEY = {"distilbert": "hidden_dim", "gpt2": "n_inner"}
# parameters of one FFN neuron and of one head channel: ModernBERT has no biases and a gated FFN-in
# (a neuron is an input row and a gate row of Wi), the others a bias on every row
NEURON_PARAMS = {"modernbert": 3 * 32}
CHANNEL_PARAMS = {"modernbert": 4 * 32}
AUTO_CLASS = {"gpt2": "AutoModelForCausalLM"}

LOAD_WITHOUT_PRUNEOFA = """
import json, sys, torch, transformers
results = []
for path, auto_class, trust, inputs in json.loads(sys.argv[1]):
    model, info = getattr(transformers, auto_class).from_pretrained(path, trust_remote_code=trust,
                                                                    output_loading_info=True)
    with torch.no_grad():
        logits = model.eval()(**{k: torch.tensor(v) for k, v in inputs.items()}).logits
    results.append({"logits": logits.tolist(), "problems": sum(len(v) for v in info.values()),
                    "class": type(model).__name__})
print(json.dumps({"results": results, "pruneofa_loaded": any(m.startswith("pruneofa") for m in sys.modules)}))
"""


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # padding: the attention mask must act on the kept heads alike
    return {"input_ids": ids, "attention_mask": mask}


def pruned(path, **fractions):
    model = load_model_dir(path)  # the class its config.json names
    Pruner(model, pattern="structured", method="oneshot", start_step=0, **fractions)
    return model


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fractions", [FFN_ONLY, WITH_HEADS], ids=["ffn-only", "with-heads"])
def test_compacted_model_is_smaller_and_computes_the_masked_models_outputs(family, fractions, tiny_models):
    dense = load_model_dir(tiny_models[family])  # masked LM, GPT-2's causal LM
    model = pruned(tiny_models[family], **fractions)
    compact = compact_model(model)
    batch = inputs()
    torch.testing.assert_close(logits(compact, batch), logits(model, batch), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits(dense, batch), logits(model, batch), atol=1e-3)  # pruning did change it
    # a neuron is an FFN-in row (+ bias) and an FFN-out column, a head channel a row (+ bias) of Q, K
    # and V (GPT-2: of each third of c_attn) and a column of the output projection
    neurons = round(fractions["ffn_sparsity"] * FFN_WIDTH.get(family, 64))
    channels = round(fractions["head_sparsity"] * 4) * 8
    removed = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in compact.parameters())
    assert removed == 2 * (neurons * NEURON_PARAMS.get(family, 2 * 32 + 1)
                           + channels * CHANNEL_PARAMS.get(family, 3 * (32 + 1) + 32))
    assert any("parametrizations" in n for n, _ in model.named_parameters())  # the input keeps its masks


@pytest.mark.slow
def test_exports_reload_with_transformers_alone_ffn_only_as_stock_checkpoints(tiny_models, tmp_path):
    jobs, expected = [], []
    for family in FAMILIES:
        for name, fractions in (("ffn-only", FFN_ONLY), ("with-heads", WITH_HEADS)):
            model = pruned(tiny_models[family], **fractions)
            out = export_compact_hf(model, tmp_path / family / name)
            config = json.loads((out / "config.json").read_text())
            ffn_width = FFN_WIDTH.get(family, 64)
            if fractions is FFN_ONLY:  # stock: a smaller FFN width in the config, no code beside it
                assert config[FFN_KEY.get(family, "intermediate_size")] == ffn_width // 2
                assert not is_compact_dir(out) and "auto_map" not in config
                assert not (out / "modeling_compact.py").exists()
            else:  # the head counts have no stock config: recorded, and the checkpoint's own modeling file
                assert config["compact"]["attention_heads"] == [2, 2]
                assert config["compact"]["ffn_sizes"] == [ffn_width // 4] * 2
                assert config["model_type"] == f"compact_{family}" and (out / "modeling_compact.py").is_file()
                reloaded = load_model_dir(out)  # pruneofa's own loaders read it without remote code
                torch.testing.assert_close(logits(reloaded, inputs(2)), logits(model, inputs(2)), rtol=1e-5, atol=1e-5)
            jobs.append((str(out), AUTO_CLASS.get(family, "AutoModelForMaskedLM"), fractions is WITH_HEADS,
                         {k: v.tolist() for k, v in inputs(2).items()}))
            expected.append(logits(model, inputs(2)))
    run = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_PRUNEOFA, json.dumps(jobs)], capture_output=True,
                         text=True, check=True, env=hf_env(tmp_path))
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert not loaded["pruneofa_loaded"]
    for result, (_, _, with_heads, _), ref in zip(loaded["results"], jobs, expected):
        assert result["problems"] == 0 and result["class"].startswith("Compact") == with_heads
        torch.testing.assert_close(torch.tensor(result["logits"]), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_fewer_heads_without_trust_remote_code_is_refused_clearly(tiny_models, tmp_path):
    out = export_compact_hf(pruned(tiny_models["bert"], **WITH_HEADS), tmp_path / "c")
    proc = subprocess.run([sys.executable, "-c", "import sys, transformers; "
                           "transformers.AutoModelForMaskedLM.from_pretrained(sys.argv[1])", str(out)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, env=hf_env(tmp_path))
    assert proc.returncode != 0 and "trust_remote_code=True" in proc.stderr


def hf_env(tmp_path):
    return {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "HF_HUB_OFFLINE": "1"}


def test_cli_export_compact_and_its_refusals(tiny_models, tokenizer, tmp_path, capsys):
    src = tmp_path / "pruned"
    fold_masks(pruned(tiny_models["bert"], **WITH_HEADS)).save_pretrained(src)
    tokenizer.save_pretrained(src)
    assert main(["export", str(src), "--format", "hf", "--compact", "--output-dir", str(tmp_path / "c")]) == 0
    assert is_compact_dir(tmp_path / "c") and (tmp_path / "c" / "tokenizer_config.json").is_file()
    capsys.readouterr()
    for args in (["--format", "onnx", "--compact"], ["--format", "compressed", "--compact"]):
        out = tmp_path / "refused"
        assert main(["export", str(src), *args, "--output-dir", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "--compact" in err and not out.exists()


def test_deberta_with_unshared_position_projections_cuts_them_per_head_too():
    """DeBERTa-v2 without share_att_key projects the relative positions with pos_key_proj/pos_query_proj,
    read per head like Q and K: a removed head's rows go from them as well."""
    torch.manual_seed(0)
    config = tiny_config("deberta-v2", 2000)
    config.share_att_key = False
    model = transformers.DebertaV2ForMaskedLM(config).eval()
    Pruner(model, pattern="structured", method="oneshot", start_step=0, **WITH_HEADS)
    compact = compact_model(model)
    attention = compact.deberta.encoder.layer[0].attention.self
    assert attention.num_attention_heads == 2 and attention.pos_key_proj.out_features == 16
    assert attention.pos_query_proj.out_features == 16
    torch.testing.assert_close(logits(compact, inputs()), logits(model, inputs()), rtol=1e-5, atol=1e-5)


def test_a_model_without_transformer_blocks_is_a_user_error():
    with pytest.raises(UserError, match="no transformer block of a known family.*ModernBERT, DeBERTa-v2/v3"):
        compact_model(torch.nn.Sequential(torch.nn.Linear(4, 4)))


@pytest.mark.parametrize("fractions", [FFN_ONLY, WITH_HEADS], ids=["ffn-only", "with-heads"])
def test_compacted_gpt2_generates_the_masked_models_tokens_and_so_does_its_checkpoint(fractions, tiny_models,
                                                                                     tmp_path):
    model = pruned(tiny_models["gpt2"], **fractions)
    compact = compact_model(model)
    attn = compact.transformer.h[0].attn  # the forward splits c_attn's output in split_size parts
    assert attn.c_attn.weight.shape == (32, 3 * attn.split_size) and attn.split_size == attn.num_heads * 8
    batch = inputs(7)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["attention_mask"][1, :4] = 0  # left padding, as batched generation has it
    out = export_compact_hf(model, tmp_path / "c")
    reloaded = load_model_dir(out)
    assert type(reloaded).__name__ == ("CompactGPT2LMHeadModel" if fractions is WITH_HEADS else "GPT2LMHeadModel")
    greedy = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    expected, right_padded = model.generate(**batch, **greedy), inputs(8)
    for candidate in (compact, reloaded):  # generate runs through the KV cache of the smaller heads
        assert torch.equal(candidate.generate(**batch, **greedy), expected)
        torch.testing.assert_close(logits(candidate, right_padded), logits(model, right_padded), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_class", ["GPT2Model", "GPT2ForSequenceClassification"])
def test_gpt2_encoder_and_classifier_compact_too(model_class, tiny_models):
    model = getattr(transformers, model_class).from_pretrained(tiny_models["gpt2"]).eval()
    Pruner(model, pattern="structured", method="oneshot", start_step=0, **WITH_HEADS)
    compact = compact_model(model)
    assert type(compact).__name__ == f"Compact{model_class}"
    batch = inputs(9)
    with torch.no_grad():
        out, ref = compact(**batch), model(**batch)
    name = "logits" if "Classification" in model_class else "last_hidden_state"
    torch.testing.assert_close(out[name], ref[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pattern,engine", [("structured", "torch-int8"), ("structured", "dense"),
                                            ("structured", "dense-int8"), ("hybrid", "sparse"), ("hybrid", "sparse-int8")])
def test_runtime_engines_run_the_compacted_model(pattern, engine, tiny_models):
    import pruneofa.runtime as rt

    model = transformers.AutoModelForMaskedLM.from_pretrained(tiny_models["bert"]).eval()
    Pruner(model, pattern=pattern, method="oneshot", start_step=0, target_sparsity=0.8, **WITH_HEADS)
    compact = compact_model(model)
    batch = inputs(3)
    # hybrid: every layer on the sparse kernels, so the whole encoder is one native call, with an attention
    # width (2 heads x 8) below the model width (32)
    options = {"sparse_threshold": 0.0} if pattern == "hybrid" else {}
    runtime = rt.load(compact, engine=engine, threads=1, **options)
    encoder = runtime.model.bert.encoder
    assert (getattr(encoder, "native", None) is not None) == (pattern == "hybrid")
    out = runtime(**batch).logits
    ref = logits(model, batch)
    assert ((out - ref).norm() / ref.norm()).item() < (1e-4 if engine in ("dense", "sparse") else 0.05)


def test_pruneofas_own_readers_take_a_compact_dir(tiny_models, tmp_path):
    import pruneofa.runtime as rt
    from pruneofa.export import load_compressed, save_compressed
    from pruneofa.modeldir import inspect_dir

    model = pruned(tiny_models["bert"], **WITH_HEADS)
    out = export_compact_hf(model, tmp_path / "c")
    assert len(inspect_dir(out)["layers"]) == 2 * 6  # the pooler of the MLM model is not there
    ref = logits(model, inputs(4))
    torch.testing.assert_close(rt.load(out, engine="dense")(**inputs(4)).logits, ref, rtol=1e-4, atol=1e-4)
    save_compressed(out, tmp_path / "z", "fp32")
    torch.testing.assert_close(logits(load_compressed(tmp_path / "z"), inputs(4)), ref, rtol=1e-5, atol=1e-5)


def test_a_structured_qat_model_compacts_to_its_dequantized_weights():
    from pruneofa.quantization.checkpoint import plain_model_copy
    from tests.export.helpers import batch, qat_train, tiny_bert

    model = tiny_bert(weight_std=0.2)
    Pruner(model, pattern="structured", method="oneshot", start_step=0, ffn_sparsity=0.5, head_sparsity=0.5)
    Pruner(model, method="lock")
    qat_train(model)
    compact = compact_model(model)
    assert compact.config.compact["attention_heads"] == [1, 1] and compact.config.compact["ffn_sizes"] == [32, 32]
    expected = plain_model_copy(model, keep_quantized_values=True)
    torch.testing.assert_close(logits(compact, batch(5, labels=False)), logits(expected, batch(5, labels=False)),
                               rtol=1e-5, atol=1e-5)


def test_a_compacted_model_pruned_further_compacts_again(tiny_models, tmp_path):
    model = pruned(tiny_models["bert"], **WITH_HEADS)
    once = compact_model(model)
    Pruner(once, pattern="structured", method="oneshot", start_step=0, ffn_sparsity=0.5, head_sparsity=0.5)
    out = export_compact_hf(once, tmp_path / "twice")
    config = json.loads((out / "config.json").read_text())
    assert config["compact"]["attention_heads"] == [1, 1] and config["compact"]["ffn_sizes"] == [8, 8]
    torch.testing.assert_close(logits(load_model_dir(out), inputs(6)), logits(once, inputs(6)), rtol=1e-5, atol=1e-5)
