"""The training engine shared by every stage: one loop, atomic checkpoints, exact resume."""
