#!/bin/bash
# usage: bench/engine_accuracy.sh [PIPELINE_OUTPUT_DIR]   (default runs/demo-full: the models of `pruneofa demo`)
# accuracy of the demo's three models in PyTorch (their metrics.json) and through onnxruntime / the sparse int8 engine
set -e
D=${1:-runs/demo-full}
mkdir -p $D/accuracy
.venv/bin/pruneofa eval $D/rt-teacher engine=ort --output $D/accuracy/dense-ort.json
.venv/bin/pruneofa eval $D/rt-sparse engine=ort --output $D/accuracy/sparse-ort.json
.venv/bin/pruneofa eval $D/rt-int8 engine=ort-qdq --output $D/accuracy/int8-ort-qdq.json
.venv/bin/pruneofa eval $D/rt-int8 engine=sparse-int8 --output $D/accuracy/int8-sparse-int8.json
