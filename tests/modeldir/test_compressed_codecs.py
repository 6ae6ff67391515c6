"""Entropy-coded compressed files: bit-exact round trips, zero-run positions, damaged coded streams."""

import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tests.export.helpers import assert_bit_equal, bits, expect_error, flip_byte, prune
from transformers import BertConfig, BertForSequenceClassification

from pruneofa.cli import main
from pruneofa.errors import UserError
from pruneofa.export import compressed_sizes, load_compressed, save_compressed
from pruneofa.modeldir import coding as codecs
from pruneofa.modeldir import gaps

VARIANTS = {  # dtype, save_compressed keywords
    "fp32": ("fp32", {}),
    "fp16": ("fp16", {}),
    "int8": ("int8", {"int8_embeddings": True, "dense_dtype": "fp16"}),
}


@pytest.fixture(scope="module")
def sparse_bert():
    """Large enough (2000 x 64 embeddings, 64 -> 256 FFN) that every kind of stream is coded: below a few
    hundred bytes coding saves less than its header entry costs, and the tensor stays uncoded."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
        max_position_embeddings=64, num_labels=3)).eval()
    prune(model)
    return model


def metadata_of(path) -> dict:
    with safe_open(path, "pt") as f:
        return f.metadata()


@pytest.mark.parametrize("codec", ["zstd", "lzma"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_coded_file_loads_bit_for_bit_what_the_uncoded_one_does(sparse_bert, tmp_path, codec, variant):
    dtype, kwargs = VARIANTS[variant]
    plain = save_compressed(sparse_bert, tmp_path / "none", dtype, codec="none", **kwargs)
    coded = save_compressed(sparse_bert, tmp_path / codec, dtype, codec=codec, **kwargs)
    assert_bit_equal(load_compressed(coded.parent).state_dict(), load_compressed(plain.parent).state_dict())
    assert coded.stat().st_size < plain.stat().st_size
    meta = metadata_of(coded)
    assert (meta["format_version"], metadata_of(plain)["format_version"]) == ("2", "1")
    manifest = json.loads(meta["manifest"])["tensors"]
    assert manifest["bert.encoder.layer.0.intermediate.dense.weight"]["encoding"] == "gaps"
    coding = json.loads(meta["coding"])
    assert {entry["codec"] for entry in coding.values()} == {codec}
    layer = "bert.encoder.layer.1.output.dense.weight"
    assert {f"{layer}#gaps", "bert.embeddings.word_embeddings.weight#values"} <= set(coding)


def test_default_codec_is_zstd_and_sizes_count_coded_bytes(sparse_bert, tmp_path):
    path = save_compressed(sparse_bert, tmp_path / "zstd", "int8")
    save_compressed(sparse_bert, tmp_path / "none", "int8", codec="none")
    assert json.loads(metadata_of(path)["manifest"])["codec"] == "zstd"
    coded, plain = compressed_sizes(path), compressed_sizes(tmp_path / "none")
    assert coded["roles"]["linear"]["stored_bytes"] < plain["roles"]["linear"]["stored_bytes"]
    stored = sum(role["stored_bytes"] for role in coded["roles"].values())
    assert stored < coded["file_bytes"] < stored + 64 * 1024  # the rest is the JSON header


@pytest.mark.parametrize("zeros_before", [0, 1, 254, 255, 256, 509, 510, 1000])
def test_zero_runs_round_trip_across_the_255_escape(zeros_before):
    t = torch.zeros(2 * zeros_before + 20)
    t[zeros_before] = 1.5
    t[2 * zeros_before + 1] = -2.0
    t[-1] = -0.0  # a pruned negative weight: comes back as +0.0, as with the bitmask
    runs, values = gaps.pack(t)
    assert values.tolist() == [1.5, -2.0]
    assert runs.numel() == 2 + 2 * (zeros_before // 255)
    assert torch.equal(bits(gaps.unpack(runs, values, tuple(t.shape))), bits(torch.where(t == 0, 0.0, t)))


@pytest.mark.parametrize("tensor", [torch.zeros(3, 4), torch.ones(3, 4), torch.randn(7, 600).relu()])
def test_zero_runs_of_empty_full_and_random_tensors(tensor):
    runs, values = gaps.pack(tensor)
    assert torch.equal(gaps.unpack(runs, values, tuple(tensor.shape)), tensor)


def test_zero_runs_past_the_end_or_disagreeing_with_values_are_refused():
    with pytest.raises(ValueError, match="cover"):
        gaps.positions(torch.tensor([5, 255], dtype=torch.uint8), 100)
    runs, values = gaps.pack(torch.tensor([0.0, 1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="disagree|values stored"):
        gaps.unpack(runs, values[:1], (4,))


@pytest.mark.parametrize("itemsize", [1, 2, 4])
def test_byte_planes_round_trip(itemsize):
    raw = bytes(range(256)) * itemsize
    assert codecs.from_byte_planes(codecs.to_byte_planes(raw, itemsize), itemsize) == raw


@pytest.mark.parametrize("codec", ["zstd", "lzma"])
def test_cut_overlong_or_missized_streams_are_value_errors(codec):
    raw = bytes(range(200)) * 50
    coded = codecs.compress(codec, raw)
    assert codecs.decompress(codec, coded, len(raw)) == raw
    for damaged, size, match in [(coded[:-4], len(raw), "cut|error"), (coded + coded, len(raw), "after the end"),
                                 (coded, len(raw) - 1, "size|longer|bytes decoded")]:
        with pytest.raises(ValueError, match=match):
            codecs.decompress(codec, damaged, size)


# --- damaged coded streams in a file: one-line UserErrors -----------------------------------------------

def rewrite(path, change_tensor=None, change_coding=None):
    """Rewrite the file with a changed coded tensor or coding entry and *valid* stored checksums, as a buggy
    writer would: only the decoding checks can catch it."""
    tensors, meta = load_file(path), metadata_of(path)
    coding = json.loads(meta["coding"])
    name = "bert.embeddings.word_embeddings.weight#values"
    assert name in coding
    if change_tensor:
        tensors[name] = change_tensor(tensors[name])
    if change_coding:
        change_coding(coding[name])
    meta["coding"] = json.dumps(coding)
    meta["sha256"] = json.dumps({k: hashlib.sha256(v.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
                                 for k, v in tensors.items()})
    save_file(tensors, path, metadata=meta)


@pytest.fixture(params=["zstd", "lzma"])
def coded_file(sparse_bert, tmp_path, request):
    return save_compressed(sparse_bert, tmp_path, "int8", int8_embeddings=True, codec=request.param)


def test_truncated_coded_stream_is_rejected(coded_file):
    rewrite(coded_file, change_tensor=lambda t: t[: t.numel() // 2].clone())
    expect_error(coded_file.parent, r"coded tensor 'bert\.embeddings\.word_embeddings\.weight#values' cannot be decoded")


def test_tampered_coded_stream_is_rejected(coded_file):
    def flip_middle_byte(t):
        t = t.clone()
        t[t.numel() // 2] ^= 0x5A
        return t

    rewrite(coded_file, change_tensor=flip_middle_byte)
    with pytest.raises(UserError, match="cannot be decoded|decodes to other bytes") as err:
        load_compressed(coded_file.parent)
    assert "\n" not in str(err.value)


def test_wrong_raw_checksum_and_unknown_codec_in_a_file_are_rejected(coded_file):
    rewrite(coded_file, change_coding=lambda entry: entry.update(raw_sha256="0" * 64))
    expect_error(coded_file.parent, "decodes to other bytes than were written")
    rewrite(coded_file, change_coding=lambda entry: entry.update(codec="brotli"))
    expect_error(coded_file.parent, "unknown codec 'brotli'")


def test_tampered_file_byte_still_fails_the_stored_checksum(coded_file):
    flip_byte(coded_file)
    expect_error(coded_file.parent, "checksum mismatch")


def test_unknown_codec_is_a_user_error(sparse_bert, tmp_path, capsys):
    with pytest.raises(UserError, match="unknown codec 'brotli'"):
        save_compressed(sparse_bert, tmp_path / "api", "int8", codec="brotli")
    model_dir = tmp_path / "model"
    sparse_bert.save_pretrained(model_dir)
    out = tmp_path / "out"
    assert main(["export", str(model_dir), "--format", "compressed", "--codec", "brotli", "--output-dir", str(out)]) == 2
    assert "unknown codec 'brotli'" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(model_dir), "--format", "hf", "--codec", "zstd", "--output-dir", str(out)]) == 2
    assert main(["export", str(model_dir), "--format", "compressed", "--codec", "lzma", "--output-dir", str(out)]) == 0
    assert json.loads(metadata_of(out / "compressed.safetensors")["manifest"])["codec"] == "lzma"


def test_cli_int8_embeddings_and_fp16_dense_parts_shrink_the_file(sparse_bert, tmp_path, capsys):
    model_dir = tmp_path / "model"
    sparse_bert.save_pretrained(model_dir)
    sizes = {}
    for name, extra in (("plain", []), ("small", ["--int8-embeddings", "--dense-dtype", "fp16"])):
        out = tmp_path / name
        assert main(["export", str(model_dir), "--format", "compressed", "--dtype", "int8", *extra,
                     "--output-dir", str(out)]) == 0
        sizes[name] = (out / "compressed.safetensors").stat().st_size
        restored = load_compressed(out)
        embeddings = restored.get_input_embeddings().weight
        original = sparse_bert.get_input_embeddings().weight
        step = original.abs().amax(dim=1, keepdim=True) / 127  # one int8 step per token row
        assert torch.all((embeddings - original).abs() <= step / 2 + 1e-6) if extra else torch.equal(embeddings, original)
    assert sizes["small"] < sizes["plain"]
    capsys.readouterr()
    for args in (["--format", "hf", "--int8-embeddings"], ["--format", "compressed", "--dense-dtype", "bf16"]):
        assert main(["export", str(model_dir), *args, "--output-dir", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and not (tmp_path / "bad").exists()
