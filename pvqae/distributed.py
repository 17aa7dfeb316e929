"""Data-parallel training across processes, GPUs or hosts with PyTorch's own engine.

Launch any training stage with ``torchrun`` (``torchrun --nproc-per-node 4 -m pvqae run
pretrain``) and the same code path trains with ``DistributedDataParallel``: each process
takes its slice of every global batch (``batch_size`` stays the global batch), gradients are
averaged by DDP, the quantizers' dead-code restarts are synchronised (``pvqae.quantizer``),
and only rank 0 writes checkpoints and logs. Without torchrun's environment nothing changes.
The backend is NCCL on CUDA and gloo on the CPU.

:func:`device` says where training and scoring compute (a GPU when there is one, each
torchrun process its own), :func:`on_device` moves models there for a computation and back
to the CPU, where every other step of the pipeline expects them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist


def device() -> torch.device:
    """Where training and scoring run: ``PVQAE_DEVICE`` when set (``cpu``, ``cuda``, ``cuda:1``),
    else this process's GPU when CUDA is available (``LOCAL_RANK`` under torchrun), else the CPU."""
    name = os.environ.get("PVQAE_DEVICE", "").strip()
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@contextlib.contextmanager
def on_device(*modules: torch.nn.Module | None) -> Iterator[torch.device]:
    """Move ``modules`` (None entries are skipped) to :func:`device` for the ``with`` block and
    back to the CPU after it (also on error); yields the device. A no-op on a CPU-only machine."""
    dev = device()
    mods = [m for m in modules if m is not None]
    for m in mods:
        m.to(dev)
    try:
        yield dev
    finally:
        for m in mods:
            m.cpu()


AUTOCAST_DEVICES = ("cuda",)  # mixed precision only where it pays; the CPU path stays float32


def autocast(dev: torch.device, mode: str = "none") -> contextlib.AbstractContextManager:
    """bf16 autocast on a CUDA ``dev`` when ``mode == "bf16"``; elsewhere (the CPU) a no-op, so
    that a seed gives the same numbers on every CPU. bf16 needs no loss scaling (fp16 would)."""
    if mode not in ("none", "bf16"):
        raise ValueError(f"autocast mode {mode!r}: expected 'none' or 'bf16'")
    if mode == "bf16" and dev.type in AUTOCAST_DEVICES:
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_tf32(dev: torch.device, enabled: bool) -> bool:
    """Let CUDA matmuls and convolutions use TF32 tensor cores (float32 storage, 10-bit mantissa
    products) on a CUDA ``dev``; nothing changes on the CPU. Returns whether TF32 is now on."""
    if dev.type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return enabled


def accelerator_info(dev: torch.device) -> dict:
    """Name and peak allocated memory of a CUDA ``dev`` (None on the CPU)."""
    if dev.type != "cuda":
        return {"gpu": None, "peak_gpu_memory_mb": None}
    return {"gpu": torch.cuda.get_device_name(dev), "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(dev) / 2**20}


def init_from_env() -> bool:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT); returns True when running distributed with >1 process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    dev = device()
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dist.get_world_size() > 1


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or not distributed): the process that writes files."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def shard(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This process's slice of a global batch (rows rank, rank + world, ...)."""
    if not active():
        return batch
    r, w = rank(), world_size()
    n = next(iter(batch.values())).shape[0]
    if n < w:
        raise ValueError(f"global batch of {n} images cannot be split over {w} processes; raise batch_size")
    return {k: v[r::w] for k, v in batch.items()}


def wrap(module: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around ``module`` when distributed, else ``module`` itself.

    A routed PVQAE needs ``find_unused_parameters=True``: random routing in pre-training
    leaves the router without gradient."""
    if not active():
        return module
    dev = next(module.parameters()).device
    device_ids = [dev] if dev.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids,
                                                     find_unused_parameters=find_unused_parameters)
