"""The C++ kernels against PyTorch, on awkward shapes: token counts that are not multiples of the
tile sizes, output rows not multiples of 16, inputs not multiples of 4 or 16, the three int8 layouts,
the GELU epilogues (BERT's erf, GPT-2's tanh) and the residual+LayerNorm post-op; also the portable
(non-AVX-512) build.

Tolerances: fp32 kernels differ from PyTorch only by summation order (max abs diff 1e-4 on O(1)
outputs). int8 kernels quantise weights per output channel and activations per token, so they are
held to a relative Frobenius error of 2% (measured: 0.3-0.8%).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pruneofa.runtime import build, kernels
from pruneofa.runtime.formats import pack_csr_f32, pack_quads_i8

SHAPES = [(64, 160), (70, 50), (3, 33)]  # (in_features, out_features)
TOKENS = [1, 37, 128, 130]


def sparse_weight(n_out, n_in, sparsity=0.9, block=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n_out, n_in, generator=g) * 0.1
    if block:
        keep = torch.rand(n_out, (n_in + 3) // 4, generator=g) >= sparsity
        return w * keep.repeat_interleave(4, 1)[:, :n_in]
    return w * (torch.rand(n_out, n_in, generator=g) >= sparsity)


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("n_in,n_out", SHAPES)
@pytest.mark.parametrize("m", TOKENS)
def test_fp32_matches_torch(n_in, n_out, m):
    w, b, x = sparse_weight(n_out, n_in), torch.randn(n_out), torch.randn(m, n_in)
    y = kernels.spmm_f32(x, pack_csr_f32(w), b, None, threads=2)
    torch.testing.assert_close(y, F.linear(x, w, b), atol=1e-4, rtol=1e-4)
    y = kernels.spmm_f32(x, pack_csr_f32(w), b, "gelu", threads=2)
    torch.testing.assert_close(y, F.gelu(F.linear(x, w, b)), atol=1e-4, rtol=1e-4)
    y = kernels.spmm_f32(x, pack_csr_f32(w), b, "gelu_tanh", threads=2)  # GPT-2's
    torch.testing.assert_close(y, F.gelu(F.linear(x, w, b), approximate="tanh"), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout,block", [("gather", False), ("blocks", True), ("gather", True), ("blocks", False)])
@pytest.mark.parametrize("n_in,n_out", SHAPES)
@pytest.mark.parametrize("m", TOKENS)
def test_int8_matches_torch(layout, block, n_in, n_out, m):
    w, b, x = sparse_weight(n_out, n_in, block=block), torch.randn(n_out), torch.randn(m, n_in)
    quads = pack_quads_i8(w, layout)
    assert quads.layout == layout
    assert rel_err(kernels.spmm_i8(x, quads, None, None, threads=2), F.linear(x, w)) < 0.02
    y = kernels.spmm_i8(x, quads, b, "gelu", threads=2)
    torch.testing.assert_close(y, F.gelu(int8_scheme_linear(x, w, b)), atol=1e-5, rtol=1e-4)
    y = kernels.spmm_i8(x, quads, b, "gelu_tanh", threads=2)
    torch.testing.assert_close(y, F.gelu(int8_scheme_linear(x, w, b), approximate="tanh"), atol=1e-5, rtol=1e-4)


def test_post_op_add_layernorm():
    w, b, x, res = sparse_weight(96, 80), torch.randn(96), torch.randn(50, 80), torch.randn(50, 96)
    gamma, beta = torch.rand(96) + 0.5, torch.randn(96)
    post = kernels.AddLayerNorm(res, gamma, beta, 1e-12)
    expected = F.layer_norm(F.linear(x, w, b) + res, (96,), gamma, beta, 1e-12)
    torch.testing.assert_close(kernels.spmm_f32(x, pack_csr_f32(w), b, None, 2, post), expected, atol=1e-4, rtol=1e-4)
    assert rel_err(kernels.spmm_i8(x, pack_quads_i8(w), b, None, 2, post), expected) < 0.02


@pytest.mark.parametrize("m", [1, 2, 50])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_post_op_keeps_the_running_sum(m, precision):
    """A pre-LayerNorm block (GPT-2): h += W x + b, then the next LayerNorm of h, in one call, with the
    sum written back into the residual (sum_out = the residual itself): at 1-2 tokens (the dot-product
    path) and 50 (the tiled one)."""
    w, b, x, h = sparse_weight(96, 80), torch.randn(96), torch.randn(m, 80), torch.randn(m, 96)
    gamma, beta = torch.rand(96) + 0.5, torch.randn(96)
    call, packed, linear = ((kernels.spmm_f32, pack_csr_f32(w), F.linear(x, w, b)) if precision == "fp32"
                            else (kernels.spmm_i8, pack_quads_i8(w), int8_scheme_linear(x, w, b)))
    running = h.clone()
    y = call(x, packed, b, None, 2, kernels.AddLayerNorm(running, gamma, beta, 1e-5, sum_out=running))
    torch.testing.assert_close(running, h + linear, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y, F.layer_norm(h + linear, (96,), gamma, beta, 1e-5), atol=1e-4, rtol=1e-4)
    untouched = h.clone()  # without sum_out the residual is only read
    call(x, packed, b, None, 2, kernels.AddLayerNorm(untouched, gamma, beta, 1e-5))
    assert torch.equal(untouched, h)


def test_auto_layout_follows_the_pattern():
    assert pack_quads_i8(sparse_weight(64, 64, block=True)).layout == "blocks"
    assert pack_quads_i8(sparse_weight(64, 64, block=False)).layout == "gather"


def test_empty_rows_and_all_zero_tokens():
    w = sparse_weight(40, 30)
    w[5:9] = 0  # rows without any non-zero
    x = torch.randn(20, 30)
    x[3] = 0  # a token of zeros has scale 0: must give the bias, not NaN
    b = torch.randn(40)
    torch.testing.assert_close(kernels.spmm_f32(x, pack_csr_f32(w), b, None, 1), F.linear(x, w, b), atol=1e-4,
                               rtol=1e-4)
    y = kernels.spmm_i8(x, pack_quads_i8(w), b, None, 1)
    assert torch.isfinite(y).all() and rel_err(y, F.linear(x, w, b)) < 0.02


def test_portable_build_matches_torch():
    """The fallback build (no -march=native, plain loops) is also the reference for the SIMD paths."""
    portable = portable_library()
    assert portable.pofa_has_vnni() == 0
    w, b, x = sparse_weight(50, 70), torch.randn(50), torch.randn(37, 70)
    torch.testing.assert_close(kernels.spmm_f32(x, pack_csr_f32(w), b, "gelu", 2, library=portable),
                               F.gelu(F.linear(x, w, b)), atol=1e-4, rtol=1e-4)
    for m in (1, 37):  # the dot-product path and the tiled one
        torch.testing.assert_close(kernels.spmm_f32(x[:m], pack_csr_f32(w), b, "gelu_tanh", 2, library=portable),
                                   F.gelu(F.linear(x[:m], w, b), approximate="tanh"), atol=1e-4, rtol=1e-4)
    for layout in ("gather", "blocks"):
        y = kernels.spmm_i8(x, pack_quads_i8(w, layout), b, None, 2, library=portable)
        assert rel_err(y, F.linear(x, w, b)) < 0.02
        native = kernels.spmm_i8(x, pack_quads_i8(w, layout), b, None, 2)
        torch.testing.assert_close(y, native, atol=1e-5, rtol=1e-5)  # same integer math, same rounding


@pytest.mark.parametrize("layout", ["gather", "blocks"])
@pytest.mark.parametrize("m", [1, 3, 9, 16, 17, 33, 48, 64, 80, 112, 130, 140, 200])
@pytest.mark.parametrize("x_fm", [False, True], ids=["token-major", "feature-major"])
def test_sparse_int8_kernel_is_the_portable_one_at_every_token_count(layout, m, x_fm, portable_lib):
    """The SIMD paths cover a tile's tokens in vectors of 32 or 64 (AVX2, AVX-512) with padded tails,
    tiles of 128, and up to 16 tokens in one vector (the gather layout with AVX512-VBMI; also a last tile
    of 12 at 140): every token count, tails and a second tile included, gives the portable loops'
    integers bit for bit (the GELU epilogue to rounding)."""
    w, b = sparse_weight(96, 80, block=layout == "blocks"), torch.randn(96)
    x = torch.randn(m, 80)
    xin, tokens = (feature_major(x), dict(tokens=m)) if x_fm else (x, {})
    packed = pack_quads_i8(w, layout)
    assert packed.layout == layout
    y = kernels.spmm_i8(xin, packed, None, None, 2, out_feature_major=x_fm, **tokens)
    assert torch.equal(y, kernels.spmm_i8(xin, packed, None, None, 2, out_feature_major=x_fm, library=portable_lib,
                                          **tokens))
    y = y[:, :m].t() if x_fm else y
    assert rel_err(y, F.linear(x, w)) < 0.03
    y = kernels.spmm_i8(xin, packed, b, "gelu", 2, out_feature_major=x_fm, **tokens)  # the SIMD GELU: to rounding
    torch.testing.assert_close(y, kernels.spmm_i8(xin, packed, b, "gelu", 2, out_feature_major=x_fm,
                                                  library=portable_lib, **tokens), atol=1e-5, rtol=1e-5)


def feature_major(x: torch.Tensor) -> torch.Tensor:
    """[M, K] -> zero-padded [K, feature_major_ld(M)]."""
    out = torch.zeros(x.shape[1], kernels.feature_major_ld(x.shape[0]))
    out[:, : x.shape[0]] = x.t()
    return out


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("x_fm,y_fm", [(False, True), (True, False), (True, True)])
@pytest.mark.parametrize("m", [1, 37, 128, 130])
def test_feature_major_layouts(precision, x_fm, y_fm, m):
    """Kernels chained without transposes: inputs and outputs [features, tokens] (padded to 64 tokens)."""
    n_in, n_out = 80, 96
    w, b, x, res = sparse_weight(n_out, n_in), torch.randn(n_out), torch.randn(m, n_in), torch.randn(m, n_out)
    gamma, beta = torch.rand(n_out) + 0.5, torch.randn(n_out)
    expected = F.layer_norm(F.gelu(F.linear(x, w, b)) + res, (n_out,), gamma, beta, 1e-12)
    post = kernels.AddLayerNorm(feature_major(res) if y_fm else res, gamma, beta, 1e-12)
    call, packed = (kernels.spmm_f32, pack_csr_f32(w)) if precision == "fp32" else (kernels.spmm_i8, pack_quads_i8(w))
    y = call(feature_major(x) if x_fm else x, packed, b, "gelu", 2, post, tokens=m if x_fm else None,
             out_feature_major=y_fm)
    if y_fm:
        assert y.shape == (n_out, kernels.feature_major_ld(m)) and torch.isfinite(y).all()
        y = y[:, :m].t()
    if precision == "fp32":
        torch.testing.assert_close(y, expected, atol=1e-4, rtol=1e-4)
    else:
        assert rel_err(y, expected) < 0.02


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("m", [37, 130])
def test_feature_major_layer_norm_is_the_same_bits_at_every_thread_count(precision, m):
    """Feature-major, each thread normalises the rows it computed and a token's statistics are merged from
    16-row blocks in order: 1, 2 and 3 threads (each splitting the 100 rows, not a multiple of 16, its own
    way) give the same bits, the running sum included, and PyTorch's LayerNorm to float rounding."""
    n_in, n_out = 80, 100
    w, b, x, h = sparse_weight(n_out, n_in), torch.randn(n_out), torch.randn(m, n_in), torch.randn(m, n_out) * 3 + 5
    gamma, beta = torch.rand(n_out) + 0.5, torch.randn(n_out)
    call, packed, linear = ((kernels.spmm_f32, pack_csr_f32(w), F.linear(x, w, b)) if precision == "fp32"
                            else (kernels.spmm_i8, pack_quads_i8(w), int8_scheme_linear(x, w, b)))
    outputs, sums = [], []
    for threads in (1, 2, 3):
        running = feature_major(h)
        post = kernels.AddLayerNorm(running, gamma, beta, 1e-5, sum_out=running)
        outputs.append(call(x, packed, b, None, threads, post, out_feature_major=True)[:, :m].t())
        sums.append(running[:, :m].t())
    assert all(torch.equal(outputs[0], y) for y in outputs[1:]) and all(torch.equal(sums[0], s) for s in sums[1:])
    torch.testing.assert_close(sums[0], h + linear, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outputs[0], F.layer_norm(h + linear, (n_out,), gamma, beta, 1e-5), atol=1e-4, rtol=1e-4)


def test_bert_embeddings_match_transformers():
    """The one-call embeddings (the fast path's) against BertEmbeddings: given and absent token types, int32 ids;
    ids, type ids and lengths out of range raise IndexError as nn.Embedding does."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEmbeddings

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=40, max_position_embeddings=20, type_vocab_size=3)
    emb = BertEmbeddings(config).eval()
    ln = emb.LayerNorm
    tables = (emb.word_embeddings.weight, emb.token_type_embeddings.weight, emb.position_embeddings.weight,
              ln.weight, ln.bias)
    ids, types = torch.randint(0, 50, (2, 13)), torch.randint(0, 3, (2, 13))
    with torch.no_grad():
        for t in (types, None):
            for i in (ids, ids.int()):
                torch.testing.assert_close(kernels.bert_embeddings(*tables, ln.eps, i, t, 2),
                                           emb(input_ids=ids, token_type_ids=t), atol=1e-5, rtol=1e-5)
    for bad_ids, bad_types, what in ((torch.tensor([[1, 50]]), None, "vocabulary"),
                                     (torch.tensor([[1, 2]]), torch.tensor([[0, 3]]), "type"),
                                     (torch.zeros(1, 21, dtype=torch.long), None, "position")):
        with pytest.raises(IndexError, match=what):
            kernels.bert_embeddings(*tables, ln.eps, bad_ids, bad_types, 2)


@pytest.fixture(scope="module")
def portable_lib():
    return portable_library()


def int8_scheme_linear(x, w, b=None):
    """F.linear of x and w as the int8 kernels see them (per-token activations q = round(x * 127 / max|x|),
    per-output-channel weights, `formats.quantize_per_row`), dequantised: the exact reference of the
    scheme, to float rounding; its distance to fp32 is quantisation error, large on a few values."""
    from pruneofa.runtime.formats import quantize_per_row

    w8, w_scale = quantize_per_row(w)
    absmax = x.abs().amax(1, keepdim=True)
    inv = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))
    acc = torch.round(x * inv).double() @ w8.double().t()
    y = (acc * (absmax / 127).double() * w_scale.double()).float()
    return y if b is None else y + b


@pytest.mark.parametrize("n_in,n_out", [(64, 160), (70, 50), (3, 33), (101, 7)])
@pytest.mark.parametrize("m", [1, 17, 128, 200])
@pytest.mark.parametrize("x_fm", [False, True], ids=["token-major", "feature-major"])
def test_dense_int8_kernel(n_in, n_out, m, x_fm, portable_lib):
    """The dense layout's register-blocked kernel (4 rows x 32 tokens at a time): row and token
    tails, in_features not a multiple of 4. Its integer sums are exact: bit-identical outputs to the
    portable loops and to the blocks layout on the same weights; equal to the int8 scheme's reference
    to rounding, also with the GELU epilogue and the add+LayerNorm post-op (feature-major in ->
    feature-major out), and within the int8 tolerance of fp32 where there are enough values for a
    relative error to mean something (one token x 7 outputs: 2.4% with one seed)."""
    w, b = sparse_weight(n_out, n_in, sparsity=0.0), torch.randn(n_out)
    x, res = torch.randn(m, n_in), torch.randn(m, n_out)
    dense = pack_quads_i8(w, "dense")
    assert dense.layout == "dense" and dense.n_quads == n_out * ((n_in + 3) // 4)
    xin, layout = (feature_major(x), dict(tokens=m)) if x_fm else (x, {})

    y = kernels.spmm_i8(xin, dense, None, None, 2, **layout)
    assert torch.equal(y, kernels.spmm_i8(xin, dense, None, None, 2, library=portable_lib, **layout))
    assert torch.equal(y, kernels.spmm_i8(xin, pack_quads_i8(w, "blocks"), None, None, 2, **layout))
    torch.testing.assert_close(y, int8_scheme_linear(x, w), atol=1e-5, rtol=1e-4)
    assert rel_err(y, F.linear(x, w)) < (0.02 if y.numel() >= 64 else 0.05)

    y = kernels.spmm_i8(xin, dense, b, "gelu", 2, **layout)
    torch.testing.assert_close(y, kernels.spmm_i8(xin, dense, b, "gelu", 2, library=portable_lib, **layout),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y, F.gelu(int8_scheme_linear(x, w, b)), atol=1e-5, rtol=1e-4)

    gamma, beta = torch.rand(n_out) + 0.5, torch.randn(n_out)
    post = kernels.AddLayerNorm(feature_major(res) if x_fm else res, gamma, beta, 1e-12)
    y = kernels.spmm_i8(xin, dense, b, None, 2, post, out_feature_major=x_fm, **layout)
    torch.testing.assert_close(y, kernels.spmm_i8(xin, dense, b, None, 2, post, out_feature_major=x_fm,
                                                  library=portable_lib, **layout), atol=1e-5, rtol=1e-5)
    y = y[:, :m].t() if x_fm else y
    torch.testing.assert_close(y, F.layer_norm(int8_scheme_linear(x, w, b) + res, (n_out,), gamma, beta, 1e-12),
                               atol=1e-4, rtol=1e-4)


def test_layouts_convert_for_a_fused_projection():
    """Q, K, V packed in different layouts concatenate in the most general one, with the same results."""
    from pruneofa.runtime.formats import concat_quads

    x = torch.randn(30, 70)
    weights = [sparse_weight(50, 70, sparsity=s, block=True, seed=i) for i, s in enumerate((0.0, 0.8, 0.0))]
    for layouts, common in [(("dense", "blocks", "dense"), "blocks"), (("dense", "gather", "blocks"), "gather"),
                            (("dense", "dense", "dense"), "dense")]:
        parts = [pack_quads_i8(w, layout) for w, layout in zip(weights, layouts)]
        fused = concat_quads(parts)
        assert fused.layout == common
        expected = torch.cat([kernels.spmm_i8(x, p, None, None, 1) for p in parts], 1)
        assert torch.equal(kernels.spmm_i8(x, fused, None, None, 1), expected)


def expected_kernel_isa(flags: set[str]) -> str:
    """The kernel set a -march=native build must pick on a CPU with these /proc/cpuinfo flags."""
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return "avx512-vnni" if "avx512_vnni" in flags else "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2-vnni" if "avx_vnni" in flags else "avx2"
    return "portable"


def test_kernel_set_follows_the_cpu():
    """The build compiles for the CPU it runs on and picks its kernels from its flags; a broken native
    build would fall back to the portable one with only a warning, so on a CPU with AVX-512 VNNI or
    AVX2 the tests must find that code running, not the portable loops."""
    flags = build.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags to compare with")
    assert kernels.kernel_isa() == expected_kernel_isa(flags)
    assert kernels.has_vnni() == (kernels.kernel_isa() == "avx512-vnni")
    assert kernels.kernel_isa(portable_library()) == "portable"


def portable_library():
    return kernels.bind(__import__("ctypes").CDLL(str(build.library_path(portable=True))))


@pytest.mark.parametrize("march,isa", [("x86-64", "portable"), ("x86-64-v3", "avx2"), ("alderlake", "avx2-vnni"),
                                       ("skylake-avx512", "avx512"), ("icelake-server", "avx512-vnni"),
                                       ("sapphirerapids", "avx512-vnni")])
def test_every_kernel_set_compiles(march, isa, tmp_path):
    """Each kernel set compiles (syntax and types, no code generation) and is the one chosen for its
    target, also those this CPU cannot run: a change to one path cannot break another unseen."""
    import platform
    import subprocess

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"x86 kernel sets; this machine is {platform.machine()}")
    try:
        compiler = build.find_compiler()
    except build.KernelBuildError as err:
        pytest.skip(str(err))
    probe = tmp_path / "probe.cpp"
    amx = "defined(POFA_AMX)" if march == "sapphirerapids" else "!defined(POFA_AMX)"  # the tiles: AMX targets only
    probe.write_text(f'#include "api.cpp"\n#include <string_view>\n'
                     f'static_assert(std::string_view(pofa::kKernelIsa) == "{isa}");\n'
                     f'#if {amx}\n#else\n#error "AMX tiles: wrong choice for -march={march}"\n#endif\n')
    proc = subprocess.run([compiler, "-fsyntax-only", "-std=c++17", "-fopenmp", f"-march={march}",
                           f"-I{build.source_dir()}", str(probe)], capture_output=True, text=True)
    if "unrecognized" in proc.stderr or "bad value" in proc.stderr:
        pytest.skip(f"{compiler} does not know -march={march}")
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---- the SIMD paths against the portable loops (the reference), wherever this CPU has them ----

@pytest.fixture(scope="module")
def simd_isa() -> str:
    isa = kernels.kernel_isa()
    if isa == "portable":
        pytest.skip("this CPU has neither AVX-512 nor AVX2+FMA: the build runs the portable loops themselves")
    return isa


def extreme_int8_case(n_out, n_in, m, seed=0):
    """Weights and activations that quantise to +-127 everywhere: every pair of products is +-2 * 127^2,
    the edge where an unsigned-by-signed byte product sum (maddubs) would saturate."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, 2, (n_out, n_in), generator=g).float() * 2 - 1
    w = w * (torch.rand(n_out, n_in, generator=g) >= 0.5)
    w[:, 0] = 1.0  # every row keeps its scale
    return w, torch.randint(0, 2, (m, n_in), generator=g).float() * 2 - 1


@pytest.mark.parametrize("layout", ["gather", "blocks", "dense"])
@pytest.mark.parametrize("n_in,n_out", [(64, 160), (70, 50), (3, 33), (101, 7)])
@pytest.mark.parametrize("m", [1, 37, 130])
@pytest.mark.parametrize("case", ["random", "extreme"])
def test_simd_int8_is_bit_identical_to_portable(layout, n_in, n_out, m, case, simd_isa, portable_lib):
    """Integer sums are exact on every path: the SIMD int8 kernels (VNNI, or AVX2 with the sign trick)
    give the same bits as the portable loops, for every layout, token-major or feature-major in and out,
    with the bias epilogue; also at the saturation edge of an unsigned x signed byte product pair."""
    if simd_isa == "avx512":
        pytest.skip("AVX-512 without VNNI runs the int8 kernels as the portable loops")
    if case == "random":
        w, x = sparse_weight(n_out, n_in, sparsity=0.0 if layout == "dense" else 0.9, block=layout == "blocks"), \
            torch.randn(m, n_in)
    else:
        w, x = extreme_int8_case(n_out, n_in, m)
    b, quads = torch.randn(n_out), pack_quads_i8(w, layout)
    assert quads.layout == layout
    for x_fm in (False, True):
        xin, kw = (feature_major(x), dict(tokens=m)) if x_fm else (x, {})
        for y_fm in (False, True):
            y = kernels.spmm_i8(xin, quads, b, None, 2, out_feature_major=y_fm, **kw)
            assert torch.equal(y, kernels.spmm_i8(xin, quads, b, None, 2, out_feature_major=y_fm,
                                                  library=portable_lib, **kw)), (x_fm, y_fm)
    if case == "extreme":  # exact integers: w8 = +-127 or 0, x8 = +-127, scales 1/127
        exact = (x @ w.t()) + b
        torch.testing.assert_close(kernels.spmm_i8(x, quads, b, None, 2), exact, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("n_in,n_out", [(64, 160), (70, 50), (3, 33)])
@pytest.mark.parametrize("m", [1, 37, 130])
def test_simd_fp32_matches_portable(n_in, n_out, m, simd_isa, portable_lib):
    """fp32 SpMM in the SIMD build against the portable loops: the same summation order per output
    (FMA instead of multiply-add: last-bit differences), GELU epilogue and add+LayerNorm post-op included."""
    w, b, x, res = sparse_weight(n_out, n_in), torch.randn(n_out), torch.randn(m, n_in), torch.randn(m, n_out)
    post = kernels.AddLayerNorm(res, torch.rand(n_out) + 0.5, torch.randn(n_out), 1e-12)
    csr = pack_csr_f32(w)
    for act, p in ((None, None), ("gelu", None), (None, post)):
        torch.testing.assert_close(kernels.spmm_f32(x, csr, b, act, 2, p),
                                   kernels.spmm_f32(x, csr, b, act, 2, p, library=portable_lib),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("engine", ["sparse", "sparse-int8"])
def test_simd_encoder_matches_the_portable_build(engine, simd_isa, portable_lib, pruned_bert, inputs, monkeypatch):
    """The whole one-call encoder (attention with a padded sequence, LayerNorms, GELU) in the SIMD
    build against the same encoder on the portable library: fp32 to float rounding; int8 (fp32
    attention on both) within rounding too, an activation whose rounding flips moves by one step."""
    import pruneofa.runtime as rt

    def encoder_output():
        m = rt.load(pruned_bert, engine=engine, int8_attention=False)
        assert m.model.encoder.native is not None
        return m(**inputs).last_hidden_state

    simd = encoder_output()
    monkeypatch.setattr(kernels, "_bound", portable_lib)
    portable = encoder_output()
    if engine == "sparse":
        torch.testing.assert_close(simd, portable, atol=1e-5, rtol=1e-5)
    else:
        assert rel_err(simd, portable) < 2e-3


@pytest.mark.parametrize("layout", ["csr-fp32", "gather", "blocks", "dense"])
@pytest.mark.parametrize("n_in,n_out", [(70, 50), (3, 33), (768, 40)])
@pytest.mark.parametrize("m", [1, 2, 16])
def test_few_token_path_equals_the_tiled_path(layout, n_in, n_out, m):
    """A few token-major tokens without a post-op (a decoder's step: up to 2, up to 16 for the dense int8
    layout) take the dot-product kernels (csrc/gemv.h); the same product through the tiled kernels (asked
    for a feature-major output) gives the same int8 bits (exact integer sums, the same dequantisation) and
    fp32 up to summation order."""
    w = sparse_weight(n_out, n_in, sparsity=0.0 if layout == "dense" else 0.9, block=layout == "blocks")
    b, x = torch.randn(n_out), torch.randn(m, n_in)
    call, packed = ((kernels.spmm_f32, pack_csr_f32(w)) if layout == "csr-fp32"
                    else (kernels.spmm_i8, pack_quads_i8(w, layout)))
    for act in (None, "gelu", "gelu_tanh"):
        few = call(x, packed, b, act, 2)
        tiled = call(x, packed, b, act, 2, out_feature_major=True)[:, :m].t()
        if layout == "csr-fp32" or act:
            torch.testing.assert_close(few, tiled, atol=1e-5, rtol=1e-5)
        else:
            assert torch.equal(few, tiled)
    res, gamma, beta = torch.randn(m, n_out), torch.rand(n_out) + 0.5, torch.randn(n_out)  # with the post-op too
    few = call(x, packed, b, None, 2, kernels.AddLayerNorm(res, gamma, beta, 1e-5))
    tiled_res = feature_major(res)
    tiled = call(x, packed, b, None, 2, kernels.AddLayerNorm(tiled_res, gamma, beta, 1e-5), out_feature_major=True)
    torch.testing.assert_close(few, tiled[:, :m].t(), atol=1e-5, rtol=1e-5)


# ---- AMX tiles (dense int8 layout), wherever the CPU and the OS have them ----

@pytest.fixture
def amx() -> None:
    if not kernels.amx_active():
        flags = build.cpu_flags()
        why = ("PRUNEOFA_AMX=0 turned the tiles off" if "amx_int8" in flags else
               "this CPU has no AMX-INT8 (no amx_int8 flag)")
        pytest.skip(f"{why}: the dense int8 kernel runs on VNNI or AVX2 here, tested above")


def test_amx_follows_the_cpu_and_the_switch():
    """Tiles are on exactly where the CPU has AMX-INT8 (the build targets the CPU, Linux >= 5.16 grants
    the tile state) unless PRUNEOFA_AMX=0; `amx_tiles` turns them off for a block and back on after."""
    import os

    flags = build.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags to compare with")
    expected = {"amx_int8", "amx_tile"} <= flags and os.environ.get("PRUNEOFA_AMX", "1") != "0"
    assert kernels.amx_active() == expected
    assert kernels.kernel_label() == (f"{kernels.kernel_isa()}+amx" if expected else kernels.kernel_isa())
    with kernels.amx_tiles(False) as on:
        assert not on and not kernels.amx_active()
    assert kernels.amx_active() == expected
    assert not kernels.amx_active(portable_library())


@pytest.mark.parametrize("n_in,n_out", [(64, 160), (128, 48), (192, 37), (100, 32)])
@pytest.mark.parametrize("m", [1, 16, 37, 64, 100, 128, 130, 200])
def test_amx_dense_int8_is_bit_identical_to_vnni_and_portable(n_in, n_out, m, amx, portable_lib):
    """The tiles form the same integer sums as the VNNI kernel and the portable loops, so the outputs are the
    same bits: inputs of whole 64-feature steps and not (the latter stay on VNNI), row blocks of 16 and a
    short last one, token tails and a second 128-token tile, token- or feature-major in and out, GELU and
    the add+LayerNorm post-op."""
    w, b = sparse_weight(n_out, n_in, sparsity=0.0), torch.randn(n_out)
    x, res = torch.randn(m, n_in), torch.randn(m, n_out)
    quads = pack_quads_i8(w, "dense")
    post = kernels.AddLayerNorm(res, torch.rand(n_out) + 0.5, torch.randn(n_out), 1e-12)
    for x_fm in (False, True):
        xin, kw = (feature_major(x), dict(tokens=m)) if x_fm else (x, {})
        for act, p, y_fm in ((None, None, False), ("gelu", None, True), (None, post, False)):
            y = kernels.spmm_i8(xin, quads, b, act, 2, p, out_feature_major=y_fm, **kw)
            with kernels.amx_tiles(False):
                vnni = kernels.spmm_i8(xin, quads, b, act, 2, p, out_feature_major=y_fm, **kw)
            assert torch.equal(y, vnni), (x_fm, act, y_fm)
            if act is None and p is None:
                assert torch.equal(y, kernels.spmm_i8(xin, quads, b, None, 2, out_feature_major=y_fm,
                                                      library=portable_lib, **kw))


def test_amx_dense_int8_encoder_is_the_vnni_one(amx, pruned_bert, inputs):
    """The whole one-call encoder with every Linear on the dense int8 layout: the same bits with and
    without tiles."""
    import math

    import pruneofa.runtime as rt

    model = rt.load(pruned_bert, engine="sparse-int8", threads=2, sparse_threshold=math.inf)
    assert "dense-int8-native" in model.report.summary()
    y = model(**inputs).last_hidden_state
    with kernels.amx_tiles(False):
        assert torch.equal(y, model(**inputs).last_hidden_state)


# ---- the AVX2 kernel sets, run for real wherever this CPU can execute them (an AVX-512 CPU runs both) ----

AVX2_TARGETS = {"avx2": (["-march=x86-64-v3"], {"avx2", "fma"}),
                "avx2-vnni": (["-march=x86-64-v3", "-mavxvnni"], {"avx2", "fma", "avx_vnni"})}


@pytest.fixture(scope="module", params=sorted(AVX2_TARGETS))
def avx2_lib(request):
    """The library built for an AVX2 kernel set other than this CPU's own (the native build picks only one)."""
    import ctypes

    flags, needs = AVX2_TARGETS[request.param]
    missing = needs - build.cpu_flags()
    if missing:
        pytest.skip(f"this CPU cannot run the {request.param} kernels (no {', '.join(sorted(missing))})")
    try:
        library = kernels.bind(ctypes.CDLL(str(build.library_path(target=flags))))
    except build.KernelBuildError as err:
        pytest.skip(f"the {request.param} build failed here: {str(err).splitlines()[0]}")
    assert kernels.kernel_isa(library) == request.param
    return library


@pytest.mark.parametrize("layout", ["gather", "blocks", "dense"])
@pytest.mark.parametrize("m", [1, 2, 17, 64, 130])
def test_avx2_kernel_sets_are_bit_identical_to_portable(layout, m, avx2_lib, portable_lib):
    """AVX2 (maddubs) and AVX2 + AVX-VNNI (vpdpbusd) form the portable loops' integer sums: the same bits for
    every layout, the decode path's few tokens (gemv) and the tiled kernels, also at the saturation edge; the
    fp32 kernels to rounding."""
    n_in, n_out = 70, 50
    for case in ("random", "extreme"):
        if case == "random":
            w = sparse_weight(n_out, n_in, sparsity=0.0 if layout == "dense" else 0.9, block=layout == "blocks")
            x = torch.randn(m, n_in)
        else:
            w, x = extreme_int8_case(n_out, n_in, m)
        b, quads = torch.randn(n_out), pack_quads_i8(w, layout)
        for act in (None, "gelu", "gelu_tanh"):
            y = kernels.spmm_i8(x, quads, b, act, 2, library=avx2_lib)
            ref = kernels.spmm_i8(x, quads, b, act, 2, library=portable_lib)
            if act is None:
                assert torch.equal(y, ref), case
            else:
                torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    csr = pack_csr_f32(w)
    for act in ("gelu", "gelu_tanh"):
        torch.testing.assert_close(kernels.spmm_f32(x, csr, b, act, 2, library=avx2_lib),
                                   kernels.spmm_f32(x, csr, b, act, 2, library=portable_lib), atol=1e-5, rtol=1e-5)


def test_the_tile_counter_says_when_tiles_ran(amx):
    """`pruneofa bench` names "+amx" only where a call ran tiles: a dense int8 layer of 64-feature steps over
    32 tokens does, the one-token dot-product path and a call with the tiles off do not."""
    w = sparse_weight(64, 128, sparsity=0.0)
    quads = pack_quads_i8(w, "dense")
    before = kernels.tile_sessions()
    kernels.spmm_i8(torch.randn(32, 128), quads, None, None, 2)
    assert kernels.tile_sessions() > before
    before = kernels.tile_sessions()
    kernels.spmm_i8(torch.randn(1, 128), quads, None, None, 2)
    with kernels.amx_tiles(False):
        kernels.spmm_i8(torch.randn(32, 128), quads, None, None, 2)
    assert kernels.tile_sessions() == before
