import os

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

import mutransfer
from mutransfer.training import local_batch, lr_scheduler

if "RANK" in os.environ:  # under torchrun --nproc_per_node=N this_file.py
    dist.init_process_group()
else:  # or try it in one process
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
target = mutransfer.TransferPlan(lr=3e-3, lr_interval=(2e-3, 5e-3), batch_size=16, target_width=64,
                                 scheme="mup", optimizer_name="adamw", base_width=32)  # or from_json
torch.manual_seed(0)  # the same init on every rank: each keeps its shard of its own copy
plan = mutransfer.parametrize(lambda width: mutransfer.zoo.gpt(width, depth=2, seq_len=32),
                              width=target.target_width, base_width=target.base_width,
                              scheme=target.scheme, optimizer=target.optimizer_name)
model = plan.model
for block in model.blocks:  # shard each block, then the root
    fully_shard(block)
fully_shard(model)
opt = plan.optimizer(target.lr, model=model)  # after sharding: the plan's groups over the shards
sched = lr_scheduler(opt, steps=10, warmup=0.1)
data, gen = mutransfer.data.pycorpus(), torch.Generator().manual_seed(0)
for step in range(10):  # every rank draws the same global batch and trains on its slice
    x, y = local_batch(data.batch("train", target.batch_size, 32, gen))
    loss = data.loss(model(x), y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad()
dist.destroy_process_group()
