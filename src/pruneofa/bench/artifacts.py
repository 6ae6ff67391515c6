"""What each engine loads from disk, written once per benchmark into a work directory.

The model directory is read with `modeldir.load_model` (a plain transformers dir, a
QAT dir from `pruneofa quantize`, or a compressed dir), then every engine gets the file a
deployment of it would ship, so that its size is the size of a real artifact:

    hf                  dense fp32 model.safetensors (the model dir's own file when it is a plain dir)
    compressed-fp32     bitmask + fp32 non-zeros (`save_compressed`)
    compressed-int8     bitmask + int8 non-zeros (QAT scales for a QAT dir, else per-channel symmetric)
    onnx-fp32           model.onnx (`export_onnx`)
    onnx-int8-dynamic   onnxruntime's quantize_dynamic of model.onnx (int8 per-channel weights)
    onnx-qdq            QDQ int8 ONNX with the QAT scales (QAT dirs only)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from pruneofa.errors import UserError

class Unavailable(Exception):
    """An artifact (so the engines that load it) cannot be made for this model; the message says why."""


@dataclass
class Source:
    """The model directory as loaded: `model` as stored (a QAT model for a QAT dir) and `plain`, a plain
    transformers model (masks folded, QAT weights dequantized) that defines the fp32 reference."""

    model_dir: Path
    kind: str  # "hf" | "qat" | "compressed"
    model: nn.Module
    plain: nn.Module


def load_source(model_dir: str | Path) -> Source:
    from pruneofa.modeldir import kind_of, load_model
    from pruneofa.quantization.checkpoint import plain_model_copy

    path = Path(model_dir)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UserError(f"model directory '{path}' does not exist or has no config.json",
                        "pass a directory written by pruneofa (finetune, transfer, quantize, export) or save_pretrained")
    model, _ = load_model(path)
    model.eval()
    kind = kind_of(path)
    if kind == "qat":
        return Source(path, "qat", model, plain_model_copy(model, keep_quantized_values=True).eval())
    return Source(path, "compressed" if kind == "compressed" else "hf", model, model)


@dataclass
class Artifact:
    kind: str
    path: Path  # what the engine's loader is given: a directory (hf, compressed) or an .onnx file
    files: list[Path] = field(default_factory=list)  # the weight files in it

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


class ArtifactStore:
    """Makes each artifact on first request, in `work_dir`; remembers what could not be made and why."""

    def __init__(self, source: Source, work_dir: Path):
        self.source = source
        self.work_dir = Path(work_dir)
        self._made: dict[str, Artifact | Unavailable] = {}

    def get(self, kind: str) -> Artifact:
        if kind not in self._made:
            try:
                self._made[kind] = self._make(kind)
            except Unavailable as err:
                self._made[kind] = err
            except UserError as err:  # an export that refuses this model (e.g. an unsupported layer)
                self._made[kind] = Unavailable(f"{kind} export failed: {err}")
        made = self._made[kind]
        if isinstance(made, Unavailable):
            raise made
        return made

    def _make(self, kind: str) -> Artifact:
        from pruneofa.export import export_onnx, save_compressed

        src, out = self.source, self.work_dir / kind
        if kind == "hf":
            if src.kind == "hf":  # the user's own file: no copy
                return Artifact(kind, src.model_dir, sorted(src.model_dir.glob("model*.safetensors")))
            src.plain.save_pretrained(out)
            self._beside_weights(out)
            return Artifact(kind, out, sorted(out.glob("model*.safetensors")))
        if kind in ("compressed-fp32", "compressed-int8"):
            file = save_compressed(src.model, out, "int8" if kind.endswith("int8") else "fp32", per_channel=True)
            self._beside_weights(out)
            return Artifact(kind, out, [file])
        if kind == "onnx-fp32":
            file = export_onnx(src.model, src.plain.config, out / "model.onnx")
            return Artifact(kind, file, [file])
        if kind == "onnx-int8-dynamic":
            return self._ort_dynamic_int8(self.get("onnx-fp32").path, out / "model.onnx")
        if kind == "onnx-qdq":
            if src.kind != "qat":
                raise Unavailable("needs a QAT dir (written by pruneofa quantize): the QDQ scales come from QAT; "
                                  "ort-int8 is onnxruntime's dynamic quantization of any model")
            file = export_onnx(src.model, src.plain.config, out / "model.onnx", int8=True)
            return Artifact(kind, file, [file])
        raise ValueError(f"unknown artifact kind {kind!r}")

    def _beside_weights(self, out: Path) -> None:
        """The tokenizer and sentence-transformers files of the model dir, as a deployment ships them
        (`bench --encode` reads them from the artifact)."""
        from pruneofa.modeldir import copy_sentence_transformers_files, write_tokenizer

        write_tokenizer(out, None, self.source.model_dir)
        copy_sentence_transformers_files(self.source.model_dir, out)

    @staticmethod
    def _ort_dynamic_int8(fp32_file: Path, out_file: Path) -> Artifact:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        out_file.parent.mkdir(parents=True, exist_ok=True)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
        try:
            quantize_dynamic(str(fp32_file), str(out_file), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        return Artifact("onnx-int8-dynamic", out_file, [out_file])
