"""Prune OFA in your own training loop: prepare, step() after optimizer.step(), finalize."""

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

from pruneofa import Pruner, PruningConfig, distillation_loss
from pruneofa.data.assets import asset_path
from pruneofa.distill import DistillConfig

path = asset_path("offline/minilm-l6")
tokenizer = AutoTokenizer.from_pretrained(path)
student = AutoModelForMaskedLM.from_pretrained(path)
teacher = AutoModelForMaskedLM.from_pretrained(path).eval()  # frozen; in Prune OFA the prepared teacher

pruner = Pruner(student, PruningConfig(target_sparsity=0.85, target_step=8, stop_step=10, frequency=2))
optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.01)
collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
text = ["Gradual magnitude pruning removes the smallest weights step by step."] * 8
batch = collate([tokenizer(t, truncation=True, max_length=32) for t in text])

for step in range(1, 13):
    out = student(**batch)
    with torch.no_grad():
        t_out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = distillation_loss(out, t_out, DistillConfig(), mask=batch["attention_mask"])["loss"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    pruner.step(step)  # recomputes masks on the schedule, frozen after stop_step

pruner.finalize()  # fold masks into weights before saving
student.save_pretrained("runs/example-loop")
print(f"sparsity: {pruner.overall_sparsity():.2%}")
