"""Model directories: what one is, and how each kind is read and written. Every package that meets a
model directory goes through here.

    plain       config.json + model*.safetensors (a masked model is written plain, masks folded)
    qat         a plain dir + qat_state.safetensors: `quantization.save_qat` writes it, `load_qat` reads it
    compressed  config.json + compressed.safetensors (bitmask or zero runs + non-zeros, entropy coded):
                `save_compressed` / `load_compressed`
    compact     a dir whose config records removed heads and neurons, read with `modeling_compact`
                (written by `pruneofa.export.compact`)

- `kind_of(path)`, `is_compact_dir(path)`, `config_and_class(path)`: what a directory holds;
- `load_model(model_or_dir)`: any kind; `load_plain(path)`: a plain or compact one;
- `inspect_dir(path)`: the sparsity of its prunable layers, read from the weight files;
- a sentence-transformers directory is any of these with modules.json and the pooling beside the
  transformer: `copy_sentence_transformers_files` carries them into every output, `read_pooling` reads them.
"""

from pruneofa.modeldir.compressed import compressed_sizes, decompress_to_hf, save_compressed
from pruneofa.modeldir.compressed_read import load_compressed
from pruneofa.modeldir.dir_sparsity import format_report, inspect_dir
from pruneofa.modeldir.layout import (
    COMPRESSED_FILE,
    QAT_STATE_FILE,
    config_and_class,
    is_compact_dir,
    kind_of,
    load_plain,
    write_tokenizer,
)
from pruneofa.modeldir.loading import load_model
from pruneofa.modeldir.qat_dir import load_qat
from pruneofa.modeldir.sentence_transformers_dir import (
    SentencePooling,
    copy_sentence_transformers_files,
    is_sentence_transformers_dir,
    read_pooling,
)
from pruneofa.quantization.checkpoint import save_qat

__all__ = ["COMPRESSED_FILE", "QAT_STATE_FILE", "SentencePooling", "compressed_sizes", "config_and_class",
           "copy_sentence_transformers_files", "decompress_to_hf", "format_report", "inspect_dir", "is_compact_dir",
           "is_sentence_transformers_dir", "kind_of", "load_compressed", "load_model", "load_plain", "load_qat",
           "read_pooling", "save_compressed", "save_qat", "write_tokenizer"]
