"""Typed recipe schemas, one per stage. Unknown keys and impossible values are rejected."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from pruneofa.data.corpus import CorpusConfig
from pruneofa.distill import DistillConfig
from pruneofa.quantization.config import QuantConfig
from pruneofa.sparsity.config import PruningConfig, StrictModel
from pruneofa.tasks.config import TaskDataConfig
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


class TaskRecipe(RecipeBase):
    """Stage 3, fine-tuning on a downstream task. finetune and transfer are this one recipe (and one
    code path) with different defaults; downstream-only pruning is either with pruning.method=gmp on a dense model."""

    teacher: str | None = Field(None, description="fine-tuned model of the same task to distill from")
    data: TaskDataConfig
    pruning: PruningConfig = Field(default_factory=PruningConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)

    default_pruning_method: ClassVar[str] = "none"
    kd_off_without_teacher: ClassVar[bool] = True  # finetune: no teacher means plain fine-tuning

    @model_validator(mode="before")
    @classmethod
    def _stage_defaults(cls, data: Any) -> Any:
        # merged under what the recipe sets, so e.g. pruning.target_sparsity alone keeps the stage's method
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("pruning", {}), dict):
            data["pruning"] = {"method": cls.default_pruning_method, **data.get("pruning", {})}
        if cls.kd_off_without_teacher and not data.get("teacher") and isinstance(data.get("distill", {}), dict):
            data["distill"] = {"alpha_ce": 1.0, "alpha_kd": 0.0, **data.get("distill", {})}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "TaskRecipe":
        p, steps = self.pruning, self.train.max_steps
        if p.method == "gmp" and p.target_step > steps:
            raise ValueError(f"pruning.target_step ({p.target_step}) is after train.max_steps ({steps})")
        if (self.distill.alpha_kd > 0 or self.distill.alpha_hidden > 0) and not self.teacher:
            raise ValueError(f"{self.stage} distills from a task teacher: pass teacher=PATH (a fine-tuned model "
                             "of this task, e.g. the output of pruneofa finetune) or distill.alpha_kd=0")
        return self


class FinetuneRecipe(TaskRecipe):
    """Dense fine-tuning (the task teacher, the dense baseline); KD only when a teacher is given."""

    stage: Literal["finetune"] = "finetune"


class TransferRecipe(TaskRecipe):
    """Sparse transfer: the zero pattern of the sparse pre-trained model is locked; KD from the task teacher."""

    stage: Literal["transfer"] = "transfer"
    default_pruning_method: ClassVar[str] = "lock"
    kd_off_without_teacher: ClassVar[bool] = False


class QuantizeRecipe(TaskRecipe):
    """8-bit QAT on a task (Q8BERT style): the zero pattern is locked, then int8 fake quantization is
    added, and the model trains with KD from the task teacher. Zeros quantize to exactly 0."""

    stage: Literal["quantize"] = "quantize"
    quant: QuantConfig = Field(default_factory=QuantConfig)
    default_pruning_method: ClassVar[str] = "lock"
    kd_off_without_teacher: ClassVar[bool] = False


class EvalRecipe(StrictModel):
    """`pruneofa eval MODEL_DIR`: task metrics of a saved model (no training, no output dir)."""

    stage: Literal["eval"] = "eval"
    model: str = Field(description="model directory written by finetune/transfer (the CLI's MODEL_DIR)")
    data: TaskDataConfig | None = Field(None, description="default: the task recorded in the model's pruneofa.json")
    batch_size: int = Field(64, ge=1)
    trust_remote_code: bool = False
    engine: str = Field("torch", description="torch (transformers' forward), or any `pruneofa bench` engine: "
                                           "the metric as onnxruntime or the sparse kernels compute it")
    threads: int | None = Field(None, ge=1, description="threads of a non-torch engine (default: the machine's)")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, engine: str) -> str:
        from pruneofa.bench.engines import ENGINES

        if engine not in ENGINES:
            raise ValueError(f"unknown engine '{engine}' (one of: {', '.join(ENGINES)})")
        return engine


STAGE_SCHEMAS: dict[str, type[RecipeBase]] = {"teacher": TeacherRecipe, "prune": PruneRecipe}


def register_stage(name: str, schema: type[RecipeBase]) -> None:
    STAGE_SCHEMAS[name] = schema


for _name, _schema in {"finetune": FinetuneRecipe, "transfer": TransferRecipe, "quantize": QuantizeRecipe,
                      "eval": EvalRecipe}.items():
    register_stage(_name, _schema)  # type: ignore[arg-type]  # eval has no output_dir/train: not a RecipeBase
