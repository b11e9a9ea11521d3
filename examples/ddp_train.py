"""Data-parallel training (torch.distributed, DistributedDataParallel) of a model converted with
cuconv.torch, beside the same model in plain PyTorch from the same initial weights.

    python examples/ddp_train.py [--world-size 2] [--backend gloo|nccl] [--steps 3]
                                 [--dtype float64|float32] [--channels-last] [--compile]

Each of ``--world-size`` processes trains both models under DDP on its shard of one global batch
per step (SGD with momentum): with ``gloo`` on CPU tensors (cuconv's kernels on its emulator),
with ``nccl`` each process drives one GPU (``cuda:<rank>``). cuconv adds nothing of its own to
the data parallelism: DDP all-reduces the gradients that the ``torch.ops.cuconv`` backward
operators computed. Rank 0 prints, per step, the largest normwise difference between the two
models' parameters, and exits 1 when it exceeds the dtype's tolerance (float64 1e-12, float32
1e-5): the two differ only in summation order.
"""
from __future__ import annotations

import argparse
import copy
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import cuconv.torch as ct

TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def model() -> nn.Sequential:
    """Convolution, BatchNorm, pooling, a depthwise convolution and a transposed-convolution
    decoder step: every layer kind convert() swaps."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(), nn.ConvTranspose2d(8, 6, 2, stride=2),
        nn.AvgPool2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))


def _worker(rank: int, args, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(args.backend, rank=rank, world_size=args.world_size)
    try:
        device = torch.device(f"cuda:{rank}" if args.backend == "nccl" else "cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dtype = getattr(torch, args.dtype)
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        torch.manual_seed(0)                              # the same initial weights on every rank
        reference = model().to(device, dtype).to(memory_format=fmt)
        ours, report = ct.convert(copy.deepcopy(reference))
        assert not report.skipped, report
        kw = dict(device_ids=[rank]) if device.type == "cuda" else {}
        pair = [DDP(ours, **kw), DDP(reference, **kw)]
        if args.compile:
            pair[0] = torch.compile(pair[0])
        optims = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in pair]
        data = torch.Generator().manual_seed(1)
        shard = args.batch // args.world_size
        for step in range(args.steps):
            x = torch.randn(args.batch, 3, 11, 9, generator=data, dtype=dtype)
            labels = torch.randint(0, 4, (args.batch,), generator=data)
            x = x[rank * shard:(rank + 1) * shard].to(device).contiguous(memory_format=fmt)
            labels = labels[rank * shard:(rank + 1) * shard].to(device)
            for m, opt in zip(pair, optims):
                opt.zero_grad()
                nn.functional.cross_entropy(m(x), labels).backward()
                opt.step()
            diff = max(((p - q).norm() / q.norm()).item() for p, q in zip(ours.parameters(), reference.parameters()))
            if rank == 0:
                results.put((step, diff))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(args) -> list[tuple[int, float]]:
    """Spawn the processes; returns rank 0's [(step, largest normwise parameter difference)]."""
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(args, _free_port(), results), nprocs=args.world_size, start_method="spawn")
    out = []
    while not results.empty():
        out.append(results.get())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--backend", default="nccl" if torch.cuda.device_count() >= 2 else "gloo")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="the global batch (split across the processes)")
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the DDP-wrapped cuconv model")
    args = ap.parse_args(argv)
    if args.batch % args.world_size:
        ap.error(f"--batch {args.batch} must split evenly over --world-size {args.world_size}")
    print(f"DDP over {args.world_size} processes ({args.backend}), {args.dtype}"
          f"{', channels_last' if args.channels_last else ''}{', compiled' if args.compile else ''}")
    results = train(args)
    tol = TOL[getattr(torch, args.dtype)]
    for step, diff in results:
        print(f"step {step}: largest normwise parameter difference cuconv.torch vs torch {diff:.2e}")
    ok = len(results) == args.steps and all(d <= tol for _, d in results)
    print("parameters equal within", tol if ok else f"{tol}: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
