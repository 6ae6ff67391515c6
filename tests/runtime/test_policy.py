"""The sparse-or-dense choice per Linear reads the break-even table of the kernel set that runs."""

from pruneofa.runtime import kernels, policy


def test_each_kernel_set_has_its_own_break_even_table():
    # fp32 CSR needs more sparsity against MKL with AVX2 than with AVX-512: 60% is sparse on one only
    assert policy.use_sparse("sparse", 384, 384, 0.6, isa="avx512-vnni")
    assert not policy.use_sparse("sparse", 384, 384, 0.6, isa="avx2")
    # the AVX2 dense int8 kernel is slower than the VNNI one relative to its sparse kernel
    assert policy.use_sparse("sparse-int8", 768, 768, 0.4, isa="avx2")
    assert not policy.use_sparse("sparse-int8", 768, 768, 0.4, isa="avx512-vnni")
    # a kernel set without a table of its own (and the nearest shape for others) uses the VNNI one
    assert policy.break_even_sparsity("sparse", 700, 3000, isa="portable") == policy.BREAK_EVEN_SPARSITY["sparse"][
        (768, 3072)]
    assert set(policy.TABLES) <= {*kernels.KERNEL_ISAS, "avx512-vnni+amx"}


def test_amx_tiles_raise_the_int8_break_even_only():
    """On tiles the dense int8 kernel is ~2x faster: an 80% sparse Linear stays dense there, a 90% one
    goes sparse; fp32 has no tiles, so its choice is the VNNI one."""
    assert policy.use_sparse("sparse-int8", 768, 768, 0.8, isa="avx512-vnni")
    assert not policy.use_sparse("sparse-int8", 768, 768, 0.8, isa="avx512-vnni+amx")
    assert policy.use_sparse("sparse-int8", 384, 1536, 0.8999, isa="avx512-vnni+amx")  # a "90%" layer
    assert policy.break_even_sparsity("sparse", 384, 384, isa="avx512-vnni+amx") == \
        policy.break_even_sparsity("sparse", 384, 384, isa="avx512-vnni")


def test_the_default_table_is_the_running_kernel_sets():
    isa = kernels.kernel_label()
    table = policy.TABLES.get(isa, policy.BREAK_EVEN_SPARSITY)
    assert policy.break_even_sparsity("sparse-int8", 384, 1536) == table["sparse-int8"][(384, 1536)]
