import pytest
import torch
import transformers

from pruneofa import Pruner, PruningConfig
from pruneofa.errors import UserError
from pruneofa.sparsity import masks as M
from tests.conftest import tiny_config


def bert(vocab=64):
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(tiny_config("bert", vocab))


def test_default_selection_prunes_block_linears_and_pooler_not_heads_or_embeddings():
    pruner = Pruner(bert(), PruningConfig(method="oneshot", target_sparsity=0.5, start_step=0))
    names = set(pruner.layers)
    assert "bert.pooler.dense" in names and "bert.encoder.layer.0.attention.self.query" in names
    assert "bert.encoder.layer.1.output.dense" in names and len(names) == 2 * 6 + 1
    assert not any("classifier" in n or "embeddings" in n for n in names)


def test_gpt2_conv1d_is_pruned_in_out_orientation():
    model = transformers.GPT2LMHeadModel(tiny_config("gpt2", 64))
    pruner = Pruner(model, pattern="nm:2:4", target_sparsity=0.5, method="oneshot", start_step=0)
    assert "lm_head" not in pruner.layers and "transformer.h.0.attn.c_attn" in pruner.layers
    w = model.transformer.h[0].mlp.c_fc.weight  # Conv1D: (in, out); groups run along inputs
    assert ((w.t().reshape(-1, 4) != 0).sum(-1) == 2).all()


def test_masks_hold_through_adamw_weight_decay_accumulation_and_autocast():
    model = bert()
    pruner = Pruner(model, method="oneshot", target_sparsity=0.8, start_step=0)
    zeros = {n: (m.weight == 0).clone() for n, m in pruner.layers.items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)
    for step in range(20):
        for _ in range(2):  # gradient accumulation
            with torch.autocast("cpu", dtype=torch.bfloat16):
                x = torch.randint(0, 64, (4, 10))
                loss = model(input_ids=x, labels=torch.randint(0, 2, (4,))).loss
            (loss / 2).backward()
        opt.step()
        opt.zero_grad()
    for name, module in pruner.layers.items():
        assert torch.equal(module.weight == 0, zeros[name]), name
    pruner.finalize()
    assert not any(M.has_mask(m) for m in model.modules())
    for name, module in pruner.layers.items():
        assert torch.equal(module.weight == 0, zeros[name])


def test_lock_keeps_the_existing_zero_pattern_and_lets_the_rest_move():
    model = bert()
    Pruner(model, method="oneshot", target_sparsity=0.7, start_step=0).finalize()
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    lock = Pruner(model, method="lock")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(5):
        model(input_ids=torch.randint(0, 64, (4, 10)), labels=torch.randint(0, 2, (4,))).loss.backward()
        opt.step()
        opt.zero_grad()
    lock.finalize()
    for name in lock.layers:
        after = dict(model.named_modules())[name].weight
        assert torch.equal(after == 0, before[name] == 0)
        assert not torch.equal(after, before[name])  # the non-zeros did train


def test_gmp_reaches_the_schedule_and_layer_targets_are_exact():
    model = bert()
    pruner = Pruner(model, target_sparsity=0.9, start_step=0, target_step=8, frequency=2)
    for step in range(1, 11):
        pruner.step(step)
        assert pruner.overall_sparsity() == pytest.approx(pruner.sparsity_at(step), abs=2e-3)
    for name, s in pruner.layer_sparsity().items():
        n = pruner.layers[name].weight.numel()
        assert s * n == pytest.approx(round(0.9 * n))


def test_global_scope_reaches_the_overall_target():
    pruner = Pruner(bert(), method="oneshot", scope="global", target_sparsity=0.6, start_step=0)
    assert pruner.overall_sparsity() == pytest.approx(0.6, abs=1e-4)
    assert len(set(round(s, 3) for s in pruner.layer_sparsity().values())) > 1


def test_masks_survive_a_safetensors_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    model = bert()
    pruner = Pruner(model, method="oneshot", target_sparsity=0.5, start_step=0)
    save_file(M.plain_state_dict(model), str(tmp_path / "m.safetensors"))
    plain = bert()
    plain.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    for name in pruner.layers:
        assert torch.equal(dict(plain.named_modules())[name].weight, dict(model.named_modules())[name].weight)


def test_no_matching_layer_and_bad_regex_are_user_errors():
    with pytest.raises(UserError):
        Pruner(bert(), include=["nothing-matches"])
    with pytest.raises(UserError):
        Pruner(bert(), include=["("])


@pytest.mark.parametrize("bad", [dict(target_sparsity=1.0), dict(target_sparsity=-0.1), dict(start_step=10, target_step=5),
                                 dict(pattern="nm:2:4", target_sparsity=0.9), dict(stop_step=5, target_step=10),
                                 dict(frequency=0), dict(unknown=1)])
def test_config_rejects_impossible_values(bad):
    with pytest.raises((ValueError, UserError)):
        PruningConfig(**bad)


def test_fold_state_dict_of_a_gathered_state_equals_plain_state_dict():
    model = bert()
    Pruner(model, PruningConfig(method="oneshot", target_sparsity=0.5, start_step=0))
    for module in M.masked_modules(model).values():  # negative pruned weights: the fold must leave +0.0
        M.original_weight(module).data.neg_()
    plain, folded = M.plain_state_dict(model), M.fold_state_dict(model.state_dict())
    assert plain.keys() == folded.keys()
    for key in plain:
        assert torch.equal(plain[key], folded[key]) and not torch.signbit(folded[key][folded[key] == 0]).any()


def test_bind_follows_the_layers_into_a_copy_and_updates_its_masks():
    import copy

    model = bert()
    pruner = Pruner(model, PruningConfig(target_sparsity=0.5, target_step=2, frequency=1))
    twin = copy.deepcopy(model)
    pruner.bind(twin)
    assert all(module is twin.get_submodule(name) for name, module in pruner.layers.items())
    pruner.step(2)
    assert pruner.overall_sparsity() == pytest.approx(0.5, abs=0.01)
    assert all(M.get_mask(m).all() for m in M.masked_modules(model).values())  # the original is left alone
