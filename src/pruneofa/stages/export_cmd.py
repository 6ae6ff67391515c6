"""`pruneofa export MODEL_DIR --format hf|compressed|onnx --output-dir DIR [--dtype ...] [--int8] [--compact]`.

MODEL_DIR: any model directory pruneofa writes (finetune/transfer, a QAT dir from `quantize`, a
compressed dir) or a plain save_pretrained directory.
  hf          plain transformers checkpoint (masks folded, QAT weights dequantized); --compact: without
              its zero heads and FFN neurons, physically smaller (export.compact)
  compressed  bitmask + non-zeros safetensors; --dtype fp32|fp16|int8 (int8 uses the QAT scales of a QAT dir);
              --codec zstd|lzma|none: lossless entropy coding of the stored tensors (default zstd)
  onnx        DIR/model.onnx, fp32; --int8 (or --dtype int8): QDQ with the QAT scales (needs a QAT dir)
Bad input is refused before anything is written; a failed export leaves no output directory behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pruneofa.errors import UserError

FORMATS = ("hf", "compressed", "onnx")
DTYPES = ("fp32", "fp16", "int8")


def run_export(model_dir: str, fmt: str, output_dir: str, dtype: str | None = None, int8: bool = False,
               compact: bool = False, *, codec: str | None = None, int8_embeddings: bool = False,
               dense_dtype: str | None = None) -> Path:
    """Export MODEL_DIR; returns the written file or directory. compressed only: `int8_embeddings` stores the
    embedding tables in int8 too (the method leaves them dense, and they dominate small models' files),
    `dense_dtype` fp16 stores the unpruned rest (LayerNorm, biases, heads) in half precision."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'", f"use --format {'|'.join(FORMATS)}")
    if compact and fmt != "hf":
        raise UserError(f"--compact writes a transformers checkpoint, not {fmt}", "use --format hf with --compact")
    for given, flag in ((codec is not None, "--codec"), (int8_embeddings, "--int8-embeddings"),
                        (dense_dtype is not None, "--dense-dtype")):
        if given and fmt != "compressed":
            raise UserError(f"{flag} applies to --format compressed, not {fmt}", f"drop {flag}")
    if dense_dtype not in (None, "fp32", "fp16"):
        raise UserError(f"unknown --dense-dtype '{dense_dtype}'", "use --dense-dtype fp32|fp16")
    from pruneofa.modeldir.coding import DEFAULT_CODEC, check_codec

    codec = check_codec(codec or DEFAULT_CODEC)
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'", f"use --dtype {'|'.join(DTYPES)}")
    if int8:
        if dtype not in (None, "int8"):
            raise UserError(f"--int8 contradicts --dtype {dtype}", "pass one of them")
        dtype = "int8"
    dtype = dtype or "fp32"
    if fmt == "hf" and dtype != "fp32":
        raise UserError(f"--format hf writes fp32 weights, not {dtype}", "use --format compressed or onnx for int8/fp16")
    if fmt == "onnx" and dtype == "fp16":
        raise UserError("--format onnx supports fp32 and int8", "drop --dtype fp16")
    src = Path(model_dir)
    if not src.is_dir() or not (src / "config.json").is_file():
        raise UserError(f"model directory '{model_dir}' does not exist or has no config.json",
                        "pass a directory written by pruneofa or save_pretrained")
    out = Path(output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output directory '{out}' already exists and is not empty", "pass a new --output-dir")
    if out.resolve() == src.resolve():
        raise UserError("--output-dir is MODEL_DIR", "pass another --output-dir")
    created = not out.exists()
    try:
        return _export(src, fmt, out, dtype, compact, codec=codec,
                       compressed_options={"int8_embeddings": int8_embeddings, "dense_dtype": dense_dtype})
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _export(src: Path, fmt: str, out: Path, dtype: str, compact: bool, *, codec: str,
            compressed_options: dict) -> Path:
    from pruneofa import export

    if compact:
        from pruneofa.export.compact import export_compact_hf

        return export_compact_hf(src, out)
    if fmt == "hf":
        return export.export_hf(src, out)
    if fmt == "compressed":
        return export.save_compressed(src, out, dtype, codec=codec, **compressed_options)  # type: ignore[arg-type]
    from pruneofa.modeldir import copy_sentence_transformers_files, write_tokenizer

    tokenizer = _tokenizer_or_none(src)
    path = export.export_onnx(src, tokenizer, out / "model.onnx", int8=dtype == "int8")
    write_tokenizer(out, None, src)  # the tokenizer beside the .onnx, for serving
    copy_sentence_transformers_files(src, out)  # how to pool its last_hidden_state into sentence embeddings
    return path


def _tokenizer_or_none(src: Path):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(src)
    except Exception:  # noqa: BLE001 - no tokenizer files: input names come from the config
        return None
