"""Add Prune OFA (GMP + KD) to an existing transformers Trainer script."""

from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from pruneofa import DistillationLoss, PruningCallback
from pruneofa.data.assets import asset_path

path = asset_path("offline/minilm-l6")  # or any hub name / model directory
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)  # a fine-tuned task teacher

texts = ["a gripping, beautiful film", "dull and far too long", "sharp and funny", "a tedious mess"] * 8
data = Dataset.from_dict({"text": texts, "label": [1, 0, 1, 0] * 8})
data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=32, padding="max_length"), batched=True)

# the two lines: masks + schedule as a callback, KD as the Trainer's loss
pruning = PruningCallback(model, target_sparsity=0.9, target_step=6, frequency=2)
distill = DistillationLoss(teacher, alpha_ce=0.5, alpha_kd=0.5, temperature=2.0).attach(model)

args = TrainingArguments(output_dir="runs/example-trainer", max_steps=8, per_device_train_batch_size=8,
                         learning_rate=5e-5, report_to=[], save_strategy="no", use_cpu=True)
Trainer(model=model, args=args, train_dataset=data, callbacks=[pruning], compute_loss_func=distill).train()

pruning.finalize()  # fold the masks: a plain transformers model again
model.save_pretrained("runs/example-trainer/final")
print(f"sparsity of the pruned layers: {pruning.pruner.overall_sparsity():.2%}")
