"""Cost of the joint-attention (MM-DiT) subject map next to the attention it reads.

For one joint attention of B images, `heads` heads of `head_dim`, `image` image tokens after
`text` text tokens (SD3/Flux put the text first), times forward+backward of:
    attention   the attention's own: SDPA on q, k, v, a loss on its output, backward to q, k, v
    map (new)   joint_attention_probabilities, image rows x `kept` text columns, backward to q, k
    map (old)   the previous path: every score materialised in float32, chunked, checkpointed
    map (text softmax)  the "text softmax" map rule: a softmax over the text keys alone, every
                text column scored (its normaliser needs them all), chunked, checkpointed
as the median of --runs runs taken in turn (so load from other processes hits all alike), and
prints the ratios. On CUDA the map also runs with JOINT_NATIVE_DTYPE on (kernels in the
inputs' half precision), with its gradient's error against the old path printed, and the
default shapes add Flux's width (24 heads of 128). Target: map (new) <= attention.

    python benchmarks/joint_maps.py                          # CPU, Flux's 1024 px token count, 2 heads of 64
    python benchmarks/joint_maps.py --threads 1 --kept 256   # every text column, as the host reads them
    python benchmarks/joint_maps.py --device cuda            # bfloat16; 2x64 and 24x128
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))


def _inputs(batch, heads, head_dim, image, text, dtype, device, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    length = text + image
    q, k, v = (torch.randn(batch, heads, length, head_dim, generator=g).to(device, dtype) for _ in range(3))
    return q, k, v


def _attention_step(q0, k0, v0, upstream):
    import torch
    q, k, v = (x.detach().clone().requires_grad_() for x in (q0, k0, v0))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    (out * upstream).sum().backward()
    return q.grad


def _map_step(map_fn, q0, k0, rows, cols, upstream):
    q, k = (x.detach().clone().requires_grad_() for x in (q0, k0))
    probs = map_fn(q, k, rows, cols)
    (probs * upstream).sum().backward()
    return probs, q.grad, k.grad


def _timed(fn, device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _relative_error(new, ref):
    """max |new - ref| / max |ref| over the map and both gradients."""
    return max(float((a.detach().float() - b.detach().float()).abs().max() / b.detach().float().abs().max().clamp_min(1e-30))
               for a, b in zip(new, ref))


def measure(batch, heads, head_dim, image, text, kept, dtype, device, runs):
    """Median seconds of each candidate's forward+backward -> {name: seconds}, and each map
    variant's largest relative error against the old path -> {name: error}."""
    import torch
    from ai_t2i_attention import joint_maps

    q, k, v = _inputs(batch, heads, head_dim, image, text, dtype, device)
    rows, cols = (text, text + image), (0, kept)
    g = torch.Generator().manual_seed(1)
    upstream_map = torch.randn(batch, image, kept, generator=g).to(device)
    upstream_attention = torch.randn(q.shape, generator=g).to(device, dtype)

    def native_map(*args):
        joint_maps.JOINT_NATIVE_DTYPE = True
        try:
            return joint_maps.joint_attention_probabilities(*args)
        finally:
            joint_maps.JOINT_NATIVE_DTYPE = False

    def text_map(q_, k_, rows_, cols_):
        return joint_maps.text_attention_probabilities(q_, k_, rows_, (0, text))[..., cols_[0]:cols_[1]]

    maps = {"map (new)": joint_maps.joint_attention_probabilities,
            "map (old)": joint_maps._explicit_joint_probabilities,
            "map (text softmax)": text_map}
    if device.type == "cuda" and dtype != torch.float32:
        maps["map (new, native dtype)"] = native_map
    steps = {"attention": lambda: _attention_step(q, k, v, upstream_attention)}
    steps.update({name: (lambda fn=fn: _map_step(fn, q, k, rows, cols, upstream_map)) for name, fn in maps.items()})

    reference = _map_step(maps["map (old)"], q, k, rows, cols, upstream_map)
    errors = {name: _relative_error(_map_step(fn, q, k, rows, cols, upstream_map), reference)
              for name, fn in maps.items() if name not in ("map (old)", "map (text softmax)")}  # another quantity
    for step in steps.values():  # warm-up: kernels chosen, memory pools filled
        step()
    times = {name: [] for name in steps}
    for _ in range(runs):
        for name, step in steps.items():
            times[name].append(_timed(step, device))
    return {name: statistics.median(t) for name, t in times.items()}, errors


def report(shape: str, medians: dict, errors: dict) -> str:
    attention = medians["attention"]
    lines = [shape]
    for name, seconds in medians.items():
        line = f"  {name:<24} {seconds * 1000:10.1f} ms   {seconds / attention:6.2f}x attention"
        if name == "map (new)":
            line += f"   {medians['map (old)'] / seconds:6.2f}x faster than old"
        if name in errors:
            line += f"   max rel. error vs old {errors[name]:.1e}"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                    help="q, k, v dtype (default: float32 on the CPU, bfloat16 on CUDA)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, nargs="+", help="head counts (default 2; on CUDA 2 and 24)")
    ap.add_argument("--head-dim", type=int, nargs="+", help="head sizes, one per --heads (default 64; CUDA 64, 128)")
    ap.add_argument("--image", type=int, default=4096, help="image tokens (Flux at 1024 px: 4096)")
    ap.add_argument("--text", type=int, default=256, help="text tokens before them (Flux: 256 T5 tokens)")
    ap.add_argument("--kept", type=int, default=2, help="text columns the map keeps (subject columns)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args(argv)

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    heads = args.heads or ([2, 24] if device.type == "cuda" else [2])
    head_dims = args.head_dim or ([64, 128] if device.type == "cuda" else [64])[:len(heads)]
    if len(head_dims) != len(heads):
        ap.error(f"{len(heads)} --heads but {len(head_dims)} --head-dim: give one head size per head count")
    if not 0 < args.kept <= args.text:
        ap.error(f"--kept {args.kept} must be between 1 and --text {args.text}")
    print(f"device {device}, {str(dtype).replace('torch.', '')}, {torch.get_num_threads()} CPU threads, "
          f"median of {args.runs} runs")
    for h, d in zip(heads, head_dims):
        medians, errors = measure(args.batch, h, d, args.image, args.text, args.kept, dtype, device, args.runs)
        shape = (f"B {args.batch}, {h} heads of {d}, {args.image} image + {args.text} text tokens, "
                 f"{args.kept} columns kept")
        print(report(shape, medians, errors), flush=True)


if __name__ == "__main__":
    main()
