"""Sparse CPU inference for pruned transformers models.

    import pruneofa.runtime as rt
    m = rt.load("path/to/pruned-bert", engine="sparse-int8")   # or a model object
    out = m(input_ids=ids, attention_mask=mask)                  # what the HF model returns
    print(m.report.summary())
    emb = m.encode(["a sentence", "another"])                   # pooled as the dir's sentence-transformers config says

Engines (see engines.py): "torch" (dense fp32, transformers' forward: the reference),
"torch-int8" (dense dynamic int8), "dense" / "dense-int8" (dense matmuls in the runtime's fused
encoder), "sparse" (fp32 sparse kernels), "sparse-int8" (int8 sparse kernels and int8 attention),
"auto" (= "sparse" when the C++ kernels build, else "torch": auto never changes numerics beyond
float rounding; ask for int8 explicitly). Details and measurements: README.md in this folder.
"""

from pruneofa.runtime.build import KernelBuildError, kernels_available
from pruneofa.runtime.engines import ENGINES, ConversionReport
from pruneofa.runtime.model import RuntimeModel, default_threads, load

__all__ = ["ENGINES", "ConversionReport", "KernelBuildError", "RuntimeModel", "default_threads", "kernels_available",
           "load"]
