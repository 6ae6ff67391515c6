"""Deployment formats for (sparse, quantized) models.

- `export_hf`: a plain transformers checkpoint (masks folded, QAT weights dequantized).
- `save_compressed` / `load_compressed` / `decompress_to_hf`: bitmask + non-zeros in one
  safetensors file with checksums; fp32, fp16 or int8 values, entropy coded (zstd by default);
  the format itself is a kind of model directory, in `pruneofa.modeldir`.
- `export_onnx`: fp32 ONNX, or int8 QDQ ONNX with the QAT scales, for onnxruntime.
"""

from pruneofa.export.hf import export_hf
from pruneofa.modeldir import compressed_sizes, decompress_to_hf, load_compressed, save_compressed

__all__ = ["compressed_sizes", "decompress_to_hf", "export_hf", "export_onnx", "load_compressed", "save_compressed"]


def __getattr__(name: str):
    # ONNX export pulls in onnx/onnxscript and registers custom torch ops: load it on first use
    if name == "export_onnx":
        from pruneofa.export.onnx_export import export_onnx

        return export_onnx
    raise AttributeError(name)
