"""Times one ONNX model in another Python environment, for bench/deepsparse_compare.py.

It imports only numpy and the engine (DeepSparse or onnxruntime), never pruneofa or torch, so it
runs in a separate venv that holds DeepSparse (a deprecated package that pins its own numpy and
onnx and supports older Pythons only). It loads the model, answers one JSON line, then serves
commands from stdin, one per line, each answered by one JSON line on stdout:

    run             one forward on the inputs; answers {"seconds": S} (perf_counter around the call)
    save PATH       writes the first output of one forward to PATH (.npy)
    quit            exits

    python bench/onnx_worker.py --engine deepsparse --onnx model.onnx --inputs inputs.npz \\
        --input-order input_ids,attention_mask,token_type_ids --threads 2
"""

import argparse
import json
import sys
import time

import numpy as np


def load_engine(name, onnx_file, arrays, threads):
    """A function of the input arrays (in ONNX input order) returning the list of output arrays."""
    if name == "deepsparse":
        from deepsparse import Engine

        # static shapes: with a dynamic sequence axis DeepSparse disables its optimized runtime
        engine = Engine(model=_at_most_ir9(onnx_file), batch_size=arrays[0].shape[0], num_cores=threads,
                        input_shapes=[list(a.shape) for a in arrays])
        return engine.run, _version("deepsparse")
    if name == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # sleep between calls: the other engines run on the same cores in between
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(onnx_file, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return (lambda arrays: session.run(None, dict(zip(names, arrays)))), ort.__version__
    raise SystemExit(f"onnx_worker: unknown engine {name!r} (deepsparse or onnxruntime)")


def _at_most_ir9(onnx_file):
    """DeepSparse 1.8 reads ONNX IR versions up to 9; IR 10 (current exporters) adds only types such
    as int4 that a BERT graph does not use, so the same graph is re-labelled, in a file beside it."""
    import onnx

    model = onnx.load(onnx_file)
    if model.ir_version <= 9:
        return onnx_file
    model.ir_version = 9
    out = onnx_file[: -len(".onnx")] + "-ir9.onnx" if onnx_file.endswith(".onnx") else onnx_file + "-ir9"
    onnx.save(model, out)
    return out


def _version(package):
    from importlib.metadata import version

    return version(package)


def reply(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", required=True)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--inputs", required=True, help=".npz of the input arrays")
    parser.add_argument("--input-order", required=True, help="comma-separated ONNX input names")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    stored = np.load(args.inputs)
    arrays = [np.ascontiguousarray(stored[name]) for name in args.input_order.split(",")]
    try:
        forward, version = load_engine(args.engine, args.onnx, arrays, args.threads)
    except ImportError as err:
        reply({"error": f"{args.engine} is not importable in {sys.executable} ({err})"})
        return 2
    reply({"ready": True, "engine": args.engine, "version": version, "python": sys.version.split()[0]})
    for line in sys.stdin:
        command, _, rest = line.strip().partition(" ")
        if command == "run":
            start = time.perf_counter()
            forward(arrays)
            reply({"seconds": time.perf_counter() - start})
        elif command == "save":
            np.save(rest, np.asarray(forward(arrays)[0]))
            reply({"saved": rest})
        elif command == "quit":
            return 0
        else:
            reply({"error": f"unknown command {command!r}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
