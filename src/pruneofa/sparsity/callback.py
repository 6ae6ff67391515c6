"""`PruningCallback`: gradual magnitude pruning (or pattern lock) for any transformers `Trainer`.

    pruning = PruningCallback(model, target_sparsity=0.9, target_step=5000, frequency=100)
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[pruning])

Masks are attached when the callback is built, before the Trainer exists, so Trainer checkpoints
carry them (as `...parametrizations.weight.original` and `...mask`) and `resume_from_checkpoint`
restores them. Call `pruning.finalize()` before the final `save_model()` to fold the masks and get
a plain transformers checkpoint.

`pruning.criterion=obs` reads the gradients through the `on_pre_optimizer_step` event (transformers
>= 4.46), called after clipping and before the optimizer step, as `Pruner.observe_gradients` expects.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import TrainerCallback

from pruneofa.sparsity.config import PruningConfig
from pruneofa.sparsity.pruner import Pruner


class PruningCallback(TrainerCallback):
    def __init__(self, model: nn.Module, config: PruningConfig | dict[str, Any] | None = None, **overrides: Any):
        self.pruner = Pruner(model, config, **overrides)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # after the backward (and clipping) of the update that global_step is about to count
        self.pruner.observe_gradients(state.global_step + 1)

    def on_step_end(self, args, state, control, **kwargs):
        # global_step has just been incremented: it counts optimizer updates, as Pruner.step expects
        self.pruner.step(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.pruner.layers:
            logs["sparsity"] = round(self.pruner.overall_sparsity(), 4)

    def finalize(self) -> nn.Module:
        """Fold the masks into the weights (call once training is over, before saving)."""
        return self.pruner.finalize()
