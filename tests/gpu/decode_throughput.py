"""Decode throughput of a randomly initialised Llama-shaped model, against the roofline.

    python tests/gpu/decode_throughput.py [--out decode.json] [--layers 32] [--context 1024]

One prepared check for a machine with an NVIDIA GPU (PyTorch with CUDA): no
weights are downloaded; a Llama-3.1-8B-shaped model (hidden 4096, 32 heads, 8
KV heads, MLP 14336, vocabulary 128,256) is built with random BF16 weights, a
KV cache of ``--context`` tokens is filled per sequence, and one decode step
(every layer: RMSNorm, QKV, attention over the cache, output projection,
SwiGLU MLP; then the LM head) is timed at batch sizes 1 to 64. It finishes in
well under 5 minutes on one H100/H200-class GPU.

It writes JSON with, per batch size, the measured step time and output
tokens/s beside gpufleet's roofline (gpufleet/economics/perf.py: weights and KV
cache read once per step at the catalogue's HBM bandwidth times its efficiency
factor, or the FLOPs, whichever is slower), and provenance: the GPU's name,
driver and CUDA, torch version, date, this script's SHA-256. Without PyTorch
or a GPU it writes ``{"skipped": reason}`` and exits 0.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import time
from pathlib import Path

BATCHES = (1, 2, 4, 8, 16, 32, 64)
CATALOGUE = {"H100": "h100-80gb", "H200": "h200-141gb", "A100-SXM4-80GB": "a100-80gb", "A100-SXM4-40GB": "a100-40gb", "L40S": "l40s", "L4": "l4", "A10G": "a10g"}


def _skip(out: Path, reason: str) -> int:
    out.write_text(json.dumps({"skipped": reason}, indent=2) + "\n")
    print(f"skipped: {reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("decode-throughput.json"))
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        return _skip(args.out, "PyTorch is not installed")
    if not torch.cuda.is_available():
        return _skip(args.out, "no CUDA GPU")

    dev = torch.device("cuda")
    dt = torch.bfloat16
    hidden, heads, kv_heads, head_dim, ffn, vocab = 4096, 32, 8, 128, 14336, 128256
    L = args.layers
    torch.manual_seed(0)

    def w(*shape):
        return (torch.randn(*shape, device=dev, dtype=dt) * 0.02)

    layers = [
        {"qkv": w((heads + 2 * kv_heads) * head_dim, hidden), "o": w(hidden, heads * head_dim), "up": w(2 * ffn, hidden), "down": w(hidden, ffn),
         "n1": torch.ones(hidden, device=dev, dtype=dt), "n2": torch.ones(hidden, device=dev, dtype=dt)}
        for _ in range(L)
    ]
    embed, head = w(vocab, hidden), w(vocab, hidden)
    params = sum(t.numel() for lay in layers for t in lay.values()) + embed.numel() + head.numel()

    def rms(x, g):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype) * g

    def step(tokens, cache_k, cache_v):
        x = embed[tokens]  # [B, hidden]
        b = x.shape[0]
        for i, lay in enumerate(layers):
            h = rms(x, lay["n1"])
            qkv = h @ lay["qkv"].T
            q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
            q = q.view(b, heads, 1, head_dim)
            k_all = torch.cat([cache_k[i], k.view(b, kv_heads, 1, head_dim)], dim=2)
            v_all = torch.cat([cache_v[i], v.view(b, kv_heads, 1, head_dim)], dim=2)
            a = torch.nn.functional.scaled_dot_product_attention(q, k_all, v_all, enable_gqa=True)
            x = x + a.reshape(b, heads * head_dim) @ lay["o"].T
            h = rms(x, lay["n2"])
            gate, up = (h @ lay["up"].T).chunk(2, dim=-1)
            x = x + (torch.nn.functional.silu(gate) * up) @ lay["down"].T
        return (x @ head.T).argmax(-1)

    name = torch.cuda.get_device_name(0)
    acc = next((v for k, v in CATALOGUE.items() if k in name), None)
    bw = None
    if acc:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        try:
            from gpufleet.catalog import ACCELERATORS
            from gpufleet.economics.perf import BANDWIDTH_EFFICIENCY

            bw = ACCELERATORS[acc].hbm_gbps * 1e9 * BANDWIDTH_EFFICIENCY
        except ImportError:
            bw = None
    rows = []
    started = time.perf_counter()
    for B in BATCHES:
        ck = [torch.randn(B, kv_heads, args.context, head_dim, device=dev, dtype=dt) for _ in range(L)]
        cv = [torch.randn(B, kv_heads, args.context, head_dim, device=dev, dtype=dt) for _ in range(L)]
        tokens = torch.randint(0, vocab, (B,), device=dev)
        with torch.inference_mode():
            for _ in range(3):
                step(tokens, ck, cv)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(tokens, ck, cv)
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) / args.steps * 1000
        kv_bytes = 2 * L * kv_heads * head_dim * 2 * args.context * B
        predicted = (params * 2 + kv_bytes) / bw * 1000 if bw else None
        rows.append({"batch": B, "step_ms": round(ms, 3), "output_tokens_per_s": round(B / ms * 1000, 1), "roofline_step_ms": round(predicted, 3) if predicted else None,
                     "measured_over_roofline": round(ms / predicted, 3) if predicted else None})
        print(json.dumps(rows[-1]), flush=True)
        del ck, cv
        torch.cuda.empty_cache()
    result = {
        "what": "decode step of a randomly initialised Llama-3.1-8B-shaped model (BF16, eager PyTorch, no CUDA graphs)",
        "layers": L, "context_tokens": args.context, "parameters": params, "results": rows,
        "provenance": {
            "source": "measured", "tool": "tests/gpu/decode_throughput.py", "sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "gpu": name, "catalogue_accelerator": acc,
            "torch": torch.__version__, "cuda": torch.version.cuda, "seconds": round(time.perf_counter() - started, 1),
        },
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
