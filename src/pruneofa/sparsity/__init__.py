"""The sparsity core: masks (parametrizations), patterns (what), schedules (when), the Pruner."""

from pruneofa.sparsity.config import PruningConfig
from pruneofa.sparsity.pruner import Pruner

__all__ = ["Pruner", "PruningConfig"]
