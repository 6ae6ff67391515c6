"""Typed recipe schemas, one per stage. Unknown keys and impossible values are rejected."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pruneofa.data.corpus import CorpusConfig
from pruneofa.distill import DistillConfig
from pruneofa.sparsity.config import PruningConfig, StrictModel
from pruneofa.train.config import TrainConfig


class RecipeBase(StrictModel):
    stage: str
    model: str = Field(description="model directory, offline/* asset or hub name")
    output_dir: str
    seed: int = 42
    resume: bool = Field(False, description="continue from output_dir's latest checkpoint")
    overwrite: bool = Field(False, description="replace an output_dir that holds another run")
    trust_remote_code: bool = False
    train: TrainConfig = Field(default_factory=TrainConfig)


class TeacherRecipe(RecipeBase):
    """Stage 1: continue LM training of a pre-trained model on the pre-training corpus."""

    stage: Literal["teacher"] = "teacher"
    data: CorpusConfig


class PruneRecipe(RecipeBase):
    """Stage 2: the student starts from the teacher and trains with GMP + KD + LR rewinding."""

    stage: Literal["prune"] = "prune"
    teacher: str | None = Field(None, description="frozen teacher (default: model)")
    data: CorpusConfig
    pruning: PruningConfig = Field(default_factory=PruningConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)

    @model_validator(mode="after")
    def _schedule_fits(self) -> "PruneRecipe":
        p, steps = self.pruning, self.train.max_steps
        if p.method == "gmp" and p.target_step > steps:
            raise ValueError(f"pruning.target_step ({p.target_step}) is after train.max_steps ({steps})")
        return self


STAGE_SCHEMAS: dict[str, type[RecipeBase]] = {"teacher": TeacherRecipe, "prune": PruneRecipe}


def register_stage(name: str, schema: type[RecipeBase]) -> None:
    STAGE_SCHEMAS[name] = schema
