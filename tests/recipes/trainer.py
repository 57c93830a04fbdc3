import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

import mutransfer
from mutransfer.training import lr_scheduler

target = mutransfer.TransferPlan(lr=1e-3, lr_interval=(5e-4, 2e-3), batch_size=8, target_width=128,
                                 scheme="mup", optimizer_name="adamw", base_width=64)
config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
plan = mutransfer.parametrize(lambda width: LlamaForCausalLM(mutransfer.hf.family(config, width)),
                              width=target.target_width, base_width=target.base_width,
                              scheme=target.scheme, optimizer=target.optimizer_name)
steps = 10
opt = target.optimizer(plan)  # the plan's param groups at the target's lr
sched = lr_scheduler(opt, steps, warmup=0.1)  # the warmup + cosine of `mutransfer train`
ids = torch.randint(0, 256, (64, 33), generator=torch.Generator().manual_seed(0))
args = TrainingArguments("trainer-out", max_steps=steps, per_device_train_batch_size=target.batch_size,
                         save_strategy="no", report_to=[], use_cpu=True)
trainer = Trainer(model=plan.model, args=args, optimizers=(opt, sched),
                  train_dataset=[{"input_ids": row, "labels": row} for row in ids])
trainer.train()
