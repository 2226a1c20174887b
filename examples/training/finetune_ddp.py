"""Supervised fine-tuning of a causal language model with PyTorch DDP.

Started by torchrun on every node of the TrainJob (the Trainer's torch
runtime sets the rendezvous variables). Each rank holds a full replica of the
model; gradients are all-reduced over NCCL (InfiniBand or EFA, configured by
the site's runtime).

Inputs come from the environment so the TrainJob stays declarative:

  MODEL        Hugging Face id or local path of the base model
  DATASET      Hugging Face dataset id or local path (instruction/response pairs)
  OUTPUT_DIR   where rank 0 writes the fine-tuned weights
  EPOCHS, LR, BATCH_PER_GPU, GRAD_ACCUM, MAX_LEN   training settings
"""

from __future__ import annotations

import contextlib
import math
import os
import time

import torch
import torch.distributed as dist
from datasets import load_dataset
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def format_example(example: dict) -> str:
    prompt = example.get("instruction") or example.get("prompt") or ""
    if example.get("input"):
        prompt += "\n\n" + example["input"]
    answer = example.get("output") or example.get("response") or ""
    return f"### Instruction:\n{prompt}\n\n### Response:\n{answer}"


def main() -> None:
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)

    model_id = env("MODEL", "meta-llama/Llama-3.2-1B-Instruct")
    max_len = int(env("MAX_LEN", "1024"))
    batch = int(env("BATCH_PER_GPU", "4"))
    accum = int(env("GRAD_ACCUM", "4"))
    epochs = int(env("EPOCHS", "1"))

    tokenizer = AutoTokenizer.from_pretrained(model_id)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    data = load_dataset(env("DATASET", "tatsu-lab/alpaca"), split="train")

    def tokenize(example: dict) -> dict:
        ids = tokenizer(format_example(example) + tokenizer.eos_token, truncation=True, max_length=max_len)
        return {"input_ids": ids["input_ids"]}

    data = data.map(tokenize, remove_columns=data.column_names)

    def collate(rows: list[dict]) -> dict:
        longest = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), longest), tokenizer.pad_token_id)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=batch, sampler=sampler, collate_fn=collate, num_workers=2, pin_memory=True)

    model = AutoModelForCausalLM.from_pretrained(model_id, torch_dtype=torch.bfloat16).to(device)
    model.gradient_checkpointing_enable()
    model = DDP(model, device_ids=[local_rank])
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(env("LR", "2e-5")), weight_decay=0.0, fused=True)
    steps = math.ceil(len(loader) / accum) * epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=max(1, steps // 50), num_training_steps=steps)

    step, started = 0, time.time()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        for i, batch_ in enumerate(loader):
            batch_ = {k: v.to(device, non_blocking=True) for k, v in batch_.items()}
            last = (i + 1) % accum == 0 or i + 1 == len(loader)
            with model.no_sync() if not last else contextlib.nullcontext():
                loss = model(**batch_).loss / accum
                loss.backward()
            if not last:
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % 10 == 0:
                reduced = loss.detach() * accum
                dist.all_reduce(reduced, op=dist.ReduceOp.AVG)
                if rank == 0:
                    print(f"epoch {epoch} step {step}/{steps} loss {reduced.item():.4f} {time.time() - started:.0f}s", flush=True)

    if rank == 0:
        out = env("OUTPUT_DIR", "/checkpoints/sft")
        model.module.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        print(f"saved {out}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
