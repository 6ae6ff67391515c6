"""Structured pruning: whole FFN neurons and attention heads through the Pruner (schedule, lock, hybrid)."""

import pytest
import torch
import transformers

from pruneofa import Pruner, PruningConfig
from pruneofa.errors import UserError
from pruneofa.sparsity import masks as M
from pruneofa.sparsity.groups import find_blocks
from pruneofa.sparsity.patterns import parse_pattern
from tests.conftest import tiny_config


def model(family="bert", seed=0, config=None):
    torch.manual_seed(seed)
    return transformers.AutoModel.from_config(config or tiny_config(family, 64)).eval()


def wide_bert(seed=0):  # 8 heads, 96 neurons: fractions with distinct rounding
    return model(seed=seed, config=transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                           num_attention_heads=8, intermediate_size=96))


def structured(m, **kw):
    return Pruner(m, **{"pattern": "structured", "method": "oneshot", "start_step": 0, **kw})


def blocks_of(m):
    return find_blocks(m, {n: x for n, x in m.named_modules() if isinstance(x, M.PRUNABLE_TYPES)})


def pruned_groups(m):
    """Per block: (zero FFN neurons, zero heads) read from the output-side columns of the weights in use."""
    out = []
    for block in blocks_of(m):
        sets = []
        for groups in (block.ffn, block.heads):
            member = groups.output_side[0]
            layer = m.get_submodule(member.layer)
            dead = (M.as_out_in(layer, layer.weight) == 0).all(dim=0)[member.index].all(dim=-1)
            sets.append(set(dead.nonzero().flatten().tolist()))
        out.append(tuple(sets))
    return out


def group_norms(m, block):
    """Reference L2 norms, written out per family member: rows of Q/K/V/FFN-in, columns of O/FFN-out."""
    norms = {}
    for kind, groups in (("ffn", block.ffn), ("heads", block.heads)):
        total = torch.zeros(groups.size)
        for member in groups.members:
            w = M.as_out_in(m.get_submodule(member.layer), m.get_submodule(member.layer).weight).detach()
            for g in range(groups.size):
                units = member.index[g]
                part = w[units] if member.axis == 0 else w[:, units]
                total[g] += part.pow(2).sum()
        norms[kind] = total.sqrt()
    return norms


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "gpt2"])
def test_groups_with_the_smallest_l2_norm_go(family):
    m = model(family)
    norms = [group_norms(m, b) for b in blocks_of(m)]
    pruner = structured(m, ffn_sparsity=0.75, head_sparsity=0.5, target_sparsity=0.5)
    assert len(pruner.blocks) == 2
    for (ffn, heads), ref in zip(pruned_groups(pruner.model), norms):
        assert ffn == set(torch.argsort(ref["ffn"])[: round(0.75 * ref["ffn"].numel())].tolist())
        assert heads == set(torch.argsort(ref["heads"])[:2].tolist())


@pytest.mark.parametrize("ffn,heads", [(0.0, 0.0), (0.3, 0.3), (2 / 3, 0.5), (0.9, 0.99)])
def test_fractions_are_exact_per_block_and_one_group_always_stays(ffn, heads):
    pruner = structured(wide_bert(), ffn_sparsity=ffn, head_sparsity=heads)
    for dead_ffn, dead_heads in pruned_groups(pruner.model):
        assert len(dead_ffn) == min(round(ffn * 96), 95) and len(dead_heads) == min(round(heads * 8), 7)
    q = pruner.layers["encoder.layer.0.attention.self.query"]
    assert 1 - M.get_mask(q).float().mean().item() == pytest.approx(min(round(heads * 8), 7) / 8)
    assert M.get_mask(pruner.layers["pooler.dense"]).all()  # outside every group: left alone


def test_schedule_drives_both_fractions_and_pruned_groups_never_come_back():
    m = wide_bert()
    pruner = Pruner(m, pattern="structured", target_sparsity=0.5, ffn_sparsity=0.75, head_sparsity=0.5,
                    start_step=0, target_step=8, frequency=2)
    before = pruned_groups(pruner.model)
    counts = []
    for step in range(1, 11):
        pruner.step(step)
        ffn_frac, head_frac = pruner.group_fractions(pruner.sparsity_at(step))
        after = pruned_groups(pruner.model)
        for (f0, h0), (f1, h1) in zip(before, after):
            assert f0 <= f1 and h0 <= h1  # monotone: what went stays gone
            assert len(f1) == round(ffn_frac * 96) and len(h1) == round(head_frac * 8)
        counts.append(len(after[0][0]))
        before = after
        with torch.no_grad():  # make every pruned neuron the largest: it must still not revive
            w = M.original_weight(pruner.layers["encoder.layer.0.output.dense"])
            w[:, sorted(after[0][0])] = 100.0
    assert counts[0] < counts[3] < counts[-1] == 72 and len(before[0][1]) == 4


def test_lock_keeps_whole_groups_through_training():
    m = transformers.BertForSequenceClassification(tiny_config("bert", 64))
    structured(m, ffn_sparsity=0.5, head_sparsity=0.5).finalize()
    lock = Pruner(m, method="lock")
    before = pruned_groups(m)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(4):
        m(input_ids=torch.randint(0, 64, (4, 10)), labels=torch.randint(0, 2, (4,))).loss.backward()
        opt.step()
        opt.zero_grad()
    lock.finalize()
    assert pruned_groups(m) == before and all(len(f) == 32 and len(h) == 2 for f, h in before)


def test_hybrid_prunes_groups_then_reaches_the_weight_sparsity_in_every_layer():
    pruner = Pruner(wide_bert(), pattern="hybrid", method="oneshot", start_step=0, target_sparsity=0.8,
                    ffn_sparsity=2 / 3, head_sparsity=0.5)
    for name, s in pruner.layer_sparsity().items():
        n = pruner.layers[name].weight.numel()
        assert round(s * n) == round(0.8 * n), name
    for dead_ffn, dead_heads in pruned_groups(pruner.model):
        assert len(dead_ffn) == 64 and len(dead_heads) == 4


def test_hybrid_keeps_group_zeros_beyond_the_weight_target():
    pruner = Pruner(wide_bert(), pattern="hybrid", method="oneshot", start_step=0, target_sparsity=0.5,
                    ffn_sparsity=0.75, head_sparsity=0.25)
    ffn_in = pruner.layer_sparsity()["encoder.layer.0.intermediate.dense"]
    assert ffn_in == pytest.approx(0.75) and pruner.layer_sparsity()["encoder.layer.0.attention.self.key"] == 0.5


def test_gpt2_fused_qkv_heads_are_pruned_in_all_three_thirds():
    m = model("gpt2")
    pruner = structured(m, ffn_sparsity=0.5, head_sparsity=0.5)
    c_attn = M.as_out_in(m.h[0].attn.c_attn, m.h[0].attn.c_attn.weight)  # (3 * 32, 32), heads of 8 rows
    dead_rows = (c_attn == 0).all(dim=1).view(3, 4, 8)
    assert dead_rows.all(dim=-1).sum(dim=-1).tolist() == [2, 2, 2]
    assert torch.equal(dead_rows[0], dead_rows[1]) and torch.equal(dead_rows[0], dead_rows[2])
    assert len(pruner.blocks) == 2


@pytest.mark.parametrize("bad,needle", [
    (dict(pattern="unstructured", ffn_sparsity=0.5), "ffn_sparsity"),
    (dict(pattern="structured", scope="global"), "scope=layer"),
    (dict(pattern="hybrid", ffn_sparsity=0.5), "head_sparsity"),
    (dict(pattern="structured", head_sparsity=1.0), "head_sparsity"),
    (dict(pattern="structured", target_sparsity=0.0), "above 0"),
])
def test_config_refuses_inconsistent_group_settings(bad, needle):
    with pytest.raises((ValueError, UserError), match=needle):
        PruningConfig(**bad)


@pytest.mark.parametrize("bad", ["structured:ffn=0.5", "structure", "hybrid:0.9", "heads"])
def test_malformed_group_patterns_are_refused(bad):
    with pytest.raises(UserError, match="structured or hybrid"):
        parse_pattern(bad)


def test_no_complete_block_is_a_user_error():
    with pytest.raises(UserError, match="no transformer block"):
        structured(model(), exclude=[r"output\.dense"])


@pytest.mark.slow
def test_cli_prune_structured_then_export_compact(tiny_models, corpus_file, tmp_path):
    from pruneofa.cli import main
    from pruneofa.modeldir import load_plain as load_model_dir
    from tests.conftest import tiny_overrides

    out = tmp_path / "student"
    schedule = {"pruning.pattern": "structured", "pruning.target_sparsity": 0.5, "pruning.ffn_sparsity": 0.75,
                "pruning.target_step": 4, "pruning.stop_step": 4, "pruning.frequency": 2}
    assert main(["prune", *tiny_overrides(tiny_models["bert"], corpus_file, out, **schedule)]) == 0
    student = transformers.AutoModelForMaskedLM.from_pretrained(out)
    assert all(len(f) == 48 and len(h) == 2 for f, h in pruned_groups(student))
    assert main(["export", str(out), "--format", "hf", "--compact", "--output-dir", str(tmp_path / "c")]) == 0
    compact = load_model_dir(tmp_path / "c")
    assert compact.config.compact["attention_heads"] == [2, 2] and compact.config.compact["ffn_sizes"] == [16, 16]


@pytest.mark.parametrize("override,needle", [
    ("pruning.pattern=structured:ffn=0.5", "structured:ffn=0.5"),
    ("pruning.ffn_sparsity=0.5", "ffn_sparsity"),
    ("pruning.pattern=hybrid", "head_sparsity"),
])
def test_cli_bad_group_settings_exit_2_with_one_line(override, needle, tmp_path, capsys):
    from pruneofa.cli import main

    out = tmp_path / "o"
    assert main(["prune", override, f"output_dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not out.exists()
