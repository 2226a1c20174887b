"""Knowledge distillation: a frozen teacher guides a smaller student, with DDP.

Every rank loads the teacher (bf16, inference only) beside its replica of the
student. The student learns from the teacher's softened next-token
distribution (KL divergence at temperature T, scaled by T^2) mixed with the
ordinary next-token loss on the data:

    loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels)

Teacher and student must share a tokenizer (for example Llama 3.1 8B and
Llama 3.2 1B). Settings come from the environment:

  TEACHER, STUDENT, DATASET, OUTPUT_DIR, TEMPERATURE, ALPHA,
  EPOCHS, LR, BATCH_PER_GPU, MAX_LEN
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from datasets import load_dataset
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from transformers import AutoModelForCausalLM, AutoTokenizer


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float):
    """Mean over the tokens that have a label (-100 marks padding)."""
    mask = labels[:, 1:] != -100
    s = student_logits[:, :-1][mask].float()
    t = teacher_logits[:, :-1][mask].float()
    kl = F.kl_div(F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1), log_target=True, reduction="batchmean")
    ce = F.cross_entropy(s, labels[:, 1:][mask])
    return alpha * temperature**2 * kl + (1 - alpha) * ce


def main() -> None:
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)

    teacher_id = env("TEACHER", "meta-llama/Llama-3.1-8B-Instruct")
    student_id = env("STUDENT", "meta-llama/Llama-3.2-1B-Instruct")
    temperature, alpha = float(env("TEMPERATURE", "2.0")), float(env("ALPHA", "0.5"))
    max_len, batch = int(env("MAX_LEN", "1024")), int(env("BATCH_PER_GPU", "4"))

    tokenizer = AutoTokenizer.from_pretrained(student_id)
    if AutoTokenizer.from_pretrained(teacher_id).get_vocab() != tokenizer.get_vocab():
        raise SystemExit(f"{teacher_id} and {student_id} do not share a tokenizer; distillation on logits needs one")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token

    data = load_dataset(env("DATASET", "tatsu-lab/alpaca"), split="train")
    text = "text" if "text" in data.column_names else None

    def tokenize(example: dict) -> dict:
        body = example[text] if text else f"{example.get('instruction', '')}\n\n{example.get('output', '')}"
        return {"input_ids": tokenizer(body + tokenizer.eos_token, truncation=True, max_length=max_len)["input_ids"]}

    data = data.map(tokenize, remove_columns=data.column_names)

    def collate(rows: list[dict]) -> dict:
        longest = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), longest), tokenizer.pad_token_id)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, : len(r["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=batch, sampler=sampler, collate_fn=collate, num_workers=2, pin_memory=True)

    teacher = AutoModelForCausalLM.from_pretrained(teacher_id, torch_dtype=torch.bfloat16).to(device).eval()
    teacher.requires_grad_(False)
    student = AutoModelForCausalLM.from_pretrained(student_id, torch_dtype=torch.bfloat16).to(device)
    student.gradient_checkpointing_enable()
    student = DDP(student, device_ids=[local_rank])
    optimizer = torch.optim.AdamW(student.parameters(), lr=float(env("LR", "5e-5")), fused=True)

    step = 0
    for epoch in range(int(env("EPOCHS", "1"))):
        sampler.set_epoch(epoch)
        for batch_ in loader:
            batch_ = {k: v.to(device, non_blocking=True) for k, v in batch_.items()}
            with torch.no_grad():
                teacher_logits = teacher(input_ids=batch_["input_ids"], attention_mask=batch_["attention_mask"]).logits
            student_logits = student(input_ids=batch_["input_ids"], attention_mask=batch_["attention_mask"]).logits
            loss = distillation_loss(student_logits, teacher_logits, batch_["labels"], temperature, alpha)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % 10 == 0:
                reduced = loss.detach()
                dist.all_reduce(reduced, op=dist.ReduceOp.AVG)
                if rank == 0:
                    print(f"epoch {epoch} step {step} distillation loss {reduced.item():.4f}", flush=True)

    if rank == 0:
        out = env("OUTPUT_DIR", "/checkpoints/distilled")
        student.module.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        print(f"saved {out}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
