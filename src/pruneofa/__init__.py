"""pruneofa: sparse pre-trained language models the Prune Once for All way.

Public API (see README):
- `Pruner`, `PruningConfig`: masks + gradual magnitude pruning / pattern lock for any training loop.
- `PruningCallback`: the same for a transformers `Trainer`, in two lines.
- `distillation_loss`, `DistillationLoss`: knowledge distillation.
"""

from pruneofa.distill import distillation_loss
from pruneofa.trainer_kd import DistillationLoss
from pruneofa.sparsity import Pruner, PruningConfig
from pruneofa.sparsity.callback import PruningCallback
from pruneofa.version import __version__

__all__ = ["DistillationLoss", "Pruner", "PruningCallback", "PruningConfig", "distillation_loss", "__version__"]
