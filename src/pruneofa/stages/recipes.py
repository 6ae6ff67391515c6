"""Typed recipe schemas, one per stage (the registry, `stages.registry`, names each stage's schema).
Unknown keys and impossible values are rejected."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from pruneofa.data.corpus import CorpusConfig
from pruneofa.distill import DistillConfig
from pruneofa.quantization.config import QuantConfig
from pruneofa.config.base import StrictModel
from pruneofa.sparsity.config import PruningConfig
from pruneofa.tasks.config import TaskDataConfig
from pruneofa.tasks.retrieval import RetrievalConfig
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


def check_sharding(train: TrainConfig, pruning: PruningConfig) -> None:
    """FSDP shards the gradients: a criterion that reads whole gradients (obs) cannot run under it."""
    if train.sharding == "fsdp" and pruning.method in ("gmp", "oneshot") and pruning.criterion == "obs":
        raise ValueError("pruning.criterion=obs reads whole gradients, which train.sharding=fsdp shards: "
                         "use pruning.criterion=magnitude or wanda, or train.sharding=none")


def refuse_length_grouping(train: TrainConfig) -> None:
    """LM stages train on packed blocks of `train.seq_len` tokens: there are no lengths to group by."""
    if train.group_by_length:
        raise ValueError("train.group_by_length groups task examples by length; an LM stage's packed blocks are "
                         "all train.seq_len long: remove it")


class HeadTrainingConfig(StrictModel):
    """A newly created head (the LM head of teacher preparation, the task head of finetune and
    transfer) trained alone first, on the frozen encoder: a random head's gradients would otherwise
    flow into the pre-trained encoder and damage it before the head is any good."""

    steps: int = Field(0, ge=0, description="updates of the new head alone, before the main steps (0: train "
                       "everything from the start); nothing happens when the checkpoint already has the head")
    lr: float = Field(1e-3, gt=0.0, description="its own peak rate (linear warm-up over the first 10% of steps, "
                      "then linear decay)")


class TeacherRecipe(RecipeBase):
    """Stage 1: continue LM training of a pre-trained model on the pre-training corpus."""

    stage: Literal["teacher"] = "teacher"
    data: CorpusConfig
    head: HeadTrainingConfig = Field(default_factory=HeadTrainingConfig)

    @model_validator(mode="after")
    def _blocks(self) -> "TeacherRecipe":
        refuse_length_grouping(self.train)
        return self


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
        check_sharding(self.train, p)
        refuse_length_grouping(self.train)
        return self


class TaskRecipe(RecipeBase):
    """Stage 3, fine-tuning on a downstream task. finetune and transfer are this one recipe (and one
    code path) with different defaults; downstream-only pruning is either with pruning.method=gmp on a dense model."""

    teacher: str | None = Field(None, description="fine-tuned model of the same task to distill from")
    data: TaskDataConfig
    pruning: PruningConfig = Field(default_factory=PruningConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    head: HeadTrainingConfig = Field(default_factory=HeadTrainingConfig)

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
        if self.distill.sentence_on_spans:
            raise ValueError("distill.sentence_inputs=spans cuts spans from masked-LM blocks (the teacher and prune "
                             "stages); a task stage's sentence term compares its own batch: drop the key")
        if self.distill.uses_teacher and not self.teacher:
            raise ValueError(f"{self.stage} distills from a task teacher: pass teacher=PATH (a fine-tuned model "
                             "of this task, e.g. the output of pruneofa finetune) or distill.alpha_kd=0 "
                             "(and alpha_hidden, alpha_attention, alpha_sentence, alpha_cls 0)")
        check_sharding(self.train, p)
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

    @model_validator(mode="after")
    def _not_sharded(self) -> "QuantizeRecipe":
        if self.train.sharding == "fsdp":
            raise ValueError("quantize does not take train.sharding=fsdp (its fake-quantization state is not "
                             "sharded): use train.sharding=none")
        return self


class EvalRecipe(StrictModel):
    """`pruneofa eval MODEL_DIR`: task metrics of a saved model (kind=task), or title -> summary
    retrieval recall of its encoder (kind=retrieval, any model dir); no training, no output dir."""

    stage: Literal["eval"] = "eval"
    kind: Literal["task", "retrieval"] = Field("task", description="task: the task head's metrics; retrieval: "
                                               "recall@1/@10 of the encoder's mean-pooled embeddings (no head)")
    model: str = Field(description="model directory written by finetune/transfer (the CLI's MODEL_DIR)")
    data: TaskDataConfig | None = Field(None, description="default: the task recorded in the model's pruneofa.json")
    batch_size: int = Field(64, ge=1)
    trust_remote_code: bool = False
    engine: str = Field("torch", description="torch (transformers' forward), or any `pruneofa bench` engine: "
                                           "the metric as onnxruntime or the sparse kernels compute it")
    threads: int | None = Field(None, ge=1, description="threads of a non-torch engine (default: the machine's)")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig, description="kind=retrieval: corpus and sizes")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, engine: str) -> str:
        from pruneofa.bench.engines import ENGINES

        if engine not in ENGINES:
            raise ValueError(f"unknown engine '{engine}' (one of: {', '.join(ENGINES)})")
        return engine

    @model_validator(mode="after")
    def _kind_fits(self) -> "EvalRecipe":
        # a setting the other kind would silently ignore is refused, so no run reports what it did not do
        if self.kind == "task":
            if "retrieval" in self.model_fields_set:
                raise ValueError("retrieval.* applies to kind=retrieval (pruneofa eval MODEL_DIR retrieval)")
            return self
        ignored = [k for k in ("data", "batch_size", "threads") if k in self.model_fields_set]
        if ignored or self.engine != "torch":
            name = ignored[0] if ignored else f"engine={self.engine}"
            raise ValueError(f"{name} applies to task metrics (kind=task), not kind=retrieval; "
                             "it runs the torch encoder with retrieval.* settings (recipe: pruneofa eval MODEL_DIR retrieval)")
        return self
