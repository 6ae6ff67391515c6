import json
import math

import pytest
import torch
from tests.export.helpers import assert_bit_equal, bits, expect_error, flip_byte, prune, tiny_bert
from safetensors.torch import load_file

from pruneofa.errors import UserError
from pruneofa.export import compressed_sizes, decompress_to_hf, load_compressed, save_compressed
from pruneofa.quantization import quantized_weights
from pruneofa.quantization.checkpoint import plain_model_copy
from pruneofa.quantization.fake_quant import dequantize_symmetric, quantize_symmetric, symmetric_scale


@pytest.fixture
def sparse_bert():
    model = tiny_bert()
    prune(model)
    return model


def test_fp32_round_trip_is_bit_exact(sparse_bert, tmp_path):
    save_compressed(sparse_bert, tmp_path, "fp32")
    expected = plain_model_copy(sparse_bert, keep_quantized_values=True).state_dict()
    assert_bit_equal(load_compressed(tmp_path).state_dict(), expected)
    # and equal in value to what the masked model computes with
    w = sparse_bert.bert.encoder.layer[1].intermediate.dense.weight
    assert torch.equal(load_compressed(tmp_path).bert.encoder.layer[1].intermediate.dense.weight, w)


def test_masked_lm_with_tied_weights_round_trips(tmp_path):
    model = tiny_bert(masked_lm=True)
    prune(model)
    save_compressed(model, tmp_path, "fp32")
    loaded = load_compressed(tmp_path)
    assert_bit_equal(loaded.state_dict(), plain_model_copy(model, keep_quantized_values=True).state_dict())
    assert loaded.cls.predictions.decoder.weight.data_ptr() == loaded.bert.embeddings.word_embeddings.weight.data_ptr()


def test_fp16_gives_exactly_the_fp16_cast_weights(sparse_bert, tmp_path):
    save_compressed(sparse_bert, tmp_path, "fp16")
    expected = {k: v.half().float() if v.is_floating_point() else v
                for k, v in plain_model_copy(sparse_bert, keep_quantized_values=True).state_dict().items()}
    assert_bit_equal(load_compressed(tmp_path).state_dict(), expected)


def test_int8_qat_model_gives_exactly_its_dequantized_weights(sparse_qat_bert, tmp_path):
    model, pruner = sparse_qat_bert
    save_compressed(model, tmp_path, "int8")
    loaded = load_compressed(tmp_path).state_dict()
    expected = plain_model_copy(model, keep_quantized_values=True).state_dict()
    assert_bit_equal(loaded, expected)  # QAT layers are q·s already; the rest is fp32
    for name, (q, scale) in quantized_weights(model).items():
        assert torch.equal(loaded[name], q.float() * scale)


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_without_qat_quantizes_linear_weights_symmetrically(sparse_bert, tmp_path, per_channel):
    save_compressed(sparse_bert, tmp_path, "int8", per_channel=per_channel)
    loaded = load_compressed(tmp_path).state_dict()
    w = plain_model_copy(sparse_bert, True).state_dict()["bert.encoder.layer.0.attention.self.value.weight"]
    scale = symmetric_scale(w, per_channel)
    expected = dequantize_symmetric(quantize_symmetric(w, scale), scale)
    assert torch.equal(bits(loaded["bert.encoder.layer.0.attention.self.value.weight"]), bits(expected))
    assert torch.equal(loaded["bert.embeddings.word_embeddings.weight"],
                       sparse_bert.bert.embeddings.word_embeddings.weight)  # embeddings stay fp32


def test_sizes_follow_the_bitmask_formula(sparse_bert, tmp_path):
    """At 90% sparsity: int8 ≈ (1/8 + 0.1) / 4 of fp32 for the Linear weights (17.8x), fp16 ≈ (1/8 + 0.2) / 4."""
    linear = {n: m.weight for n, m in sparse_bert.named_modules() if isinstance(m, torch.nn.Linear)}
    numel = sum(w.numel() for w in linear.values())
    nnz = sum(int((w != 0).sum()) for w in linear.values())
    assert nnz / numel < 0.12  # the classifier head stays dense
    sizes = {}
    for dtype in ("fp32", "fp16", "int8"):
        save_compressed(sparse_bert, tmp_path / dtype, dtype, codec="none")
        sizes[dtype] = compressed_sizes(tmp_path / dtype)["roles"]["linear"]
        assert sizes[dtype]["fp32_bytes"] == 4 * numel
    packed = sum(math.ceil(w.numel() / 8) for w in linear.values())
    assert sizes["fp32"]["stored_bytes"] <= packed + 4 * nnz
    assert sizes["fp16"]["stored_bytes"] <= packed + 2 * nnz
    assert sizes["int8"]["stored_bytes"] <= packed + nnz + 4 * len(linear)  # + one fp32 scale per layer
    assert sizes["int8"]["stored_bytes"] <= sizes["int8"]["fp32_bytes"] / 8


def test_int8_embeddings_take_a_quarter_plus_row_scales(sparse_bert, tmp_path):
    save_compressed(sparse_bert, tmp_path, "int8", int8_embeddings=True, dense_dtype="fp16", codec="none")
    report = compressed_sizes(tmp_path)["roles"]
    rows = sum(m.weight.shape[0] for m in sparse_bert.modules() if isinstance(m, torch.nn.Embedding))
    assert report["embedding"]["stored_bytes"] == report["embedding"]["fp32_bytes"] // 4 + 4 * rows
    assert report["other"]["stored_bytes"] == report["other"]["fp32_bytes"] // 2
    table = sparse_bert.bert.embeddings.word_embeddings.weight
    scale = symmetric_scale(table, per_channel=True, axis=0)
    assert torch.equal(load_compressed(tmp_path).bert.embeddings.word_embeddings.weight,
                       dequantize_symmetric(quantize_symmetric(table, scale), scale))


def test_decompress_to_hf_writes_a_plain_checkpoint(sparse_bert, tmp_path):
    save_compressed(sparse_bert, tmp_path / "c", "fp16")
    (tmp_path / "c" / "vocab.txt").write_text("[PAD]\n")
    decompress_to_hf(tmp_path / "c", tmp_path / "hf")
    saved = load_file(tmp_path / "hf" / "model.safetensors")
    rebuilt = load_compressed(tmp_path / "c").state_dict()
    assert_bit_equal(saved, {k: v for k, v in rebuilt.items() if k in saved})
    assert saved["bert.encoder.layer.0.output.dense.weight"].eq(0).float().mean() >= 0.89
    assert (tmp_path / "hf" / "vocab.txt").is_file()


# --- damaged files: one-line UserErrors, nothing half-loaded ------------------------------------------

@pytest.fixture
def saved(sparse_bert, tmp_path):
    save_compressed(sparse_bert, tmp_path, "int8")
    return tmp_path / "compressed.safetensors"


def test_truncated_file_is_rejected(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) - 100])
    expect_error(saved.parent, "truncated")
    saved.write_bytes(data[:5])
    expect_error(saved.parent, "truncated")


def test_tampered_byte_fails_the_checksum(saved):
    flip_byte(saved)
    expect_error(saved.parent, "checksum mismatch")


def test_shapes_that_disagree_with_config_are_rejected(saved):
    config = json.loads((saved.parent / "config.json").read_text())
    config["intermediate_size"] = 48
    (saved.parent / "config.json").write_text(json.dumps(config))
    expect_error(saved.parent, r"shape of 'bert\.encoder\.layer\.0\.intermediate\.dense\.(weight|bias)' is \[64")


def test_unknown_format_version_is_rejected(saved):
    data = saved.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"]["format_version"] = "99"
    raw = json.dumps(header).encode()
    saved.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])
    expect_error(saved.parent, "unknown format version 99")


def test_unknown_dtype_and_missing_file_are_user_errors(sparse_bert, tmp_path):
    with pytest.raises(UserError, match="dtype"):
        save_compressed(sparse_bert, tmp_path, "int4")
    expect_error(tmp_path / "nowhere", "no compressed checkpoint")
