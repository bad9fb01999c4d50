"""Data-parallel training across processes with torch.distributed, as launched by ``torchrun``.

``torchrun --nproc_per_node N -m gccs_core train ...`` starts N copies of the training loop. Each copy:

* joins the process group (NCCL on CUDA, gloo on CPU) and, on CUDA, takes GPU ``LOCAL_RANK``;
* draws the *same* permutation as a single process, so every step works on the same global batch of
  ``batch_size`` examples, and takes its contiguous share (``batch_size / N`` rows) of it;
* wraps the encoder in ``DistributedDataParallel`` (gradients are averaged across processes);
* gathers the latents of the whole global batch, with gradients (``torch.distributed.nn.functional.all_gather``),
  so GCCS's per-class means and covariances are those of the global batch, exactly as with one process;
* normalises with the global batch's statistics: batch-norm layers become ``torch.nn.SyncBatchNorm`` on
  CUDA, and ``GlobalBatchNorm`` (same computation through autograd-aware all-reduces) elsewhere, because
  torch's SyncBatchNorm refuses CPU tensors.

Why the gradient needs no rescaling: every process computes the same global loss L. The backward of the
gather and of the all-reduce sums the gradients that all N copies of L send to a process's own rows, so each
process holds N times its share of dL/dθ, and DDP's average over N processes gives exactly dL/dθ.

We split each global batch ourselves instead of using ``torch.utils.data.DistributedSampler``: the data live
in memory as tensors, and DistributedSampler draws its own permutation and pads the last batch with repeated
examples, so it could not give the same batches (and the same weights) as one process.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .data import Dataset

if TYPE_CHECKING:  # for the type only
    from .models import LatentClassifier


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, number of processes, its device, and whether we own the process group."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and runs the callbacks."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is invalid: it must be an integer.") from None


def setup(device: torch.device) -> DistContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1) or use one that already exists.

    One process (no torchrun, no group): ``DistContext(device)``. Under torchrun on CUDA each process takes
    GPU ``LOCAL_RANK`` and NCCL; on CPU, gloo. MPS cannot be used by several processes.
    """
    if dist.is_available() and dist.is_initialized():
        world, rank, owns = dist.get_world_size(), dist.get_rank(), False
    else:
        world, rank, owns = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), True
        if world <= 1:
            return DistContext(device)
    if device.type == "mps":
        raise ValueError(f"device='mps' cannot be shared by {world} processes; use --device cpu, or one process.")
    if device.type == "cuda":
        local_rank = _env_int("LOCAL_RANK", rank)
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"process {rank} wants GPU {local_rank}, but only {torch.cuda.device_count()} are visible; "
                f"use --nproc_per_node <= {torch.cuda.device_count()}."
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if owns:
        if device.type == "cuda":  # binding the GPU up front lets NCCL set up eagerly (and barriers use the right GPU)
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
        world, rank = dist.get_world_size(), dist.get_rank()
    return DistContext(device, rank, world, owns)


def teardown(ctx: DistContext) -> None:
    """Leave the process group if ``setup`` created it, once every process got here (rank 0 has written its files).

    The barrier keeps a process from tearing its connections down while another still talks to it (gloo
    can abort a process that exits with communication in flight).
    """
    if ctx.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def check_batch_size(batch_size: int, ctx: DistContext) -> None:
    """The global batch must split evenly across the processes."""
    if batch_size % ctx.world_size != 0:
        lower = batch_size - batch_size % ctx.world_size
        raise ValueError(
            f"batch_size={batch_size} does not divide across {ctx.world_size} processes; --batch-size is the global "
            f"batch and must be a multiple of {ctx.world_size} (e.g. {lower or ctx.world_size} or {lower + ctx.world_size})."
        )


def shard(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This process's contiguous share of the rows of ``t`` (sizes differ by at most one row; the whole of ``t`` alone)."""
    return torch.tensor_split(t, ctx.world_size)[ctx.rank] if ctx.enabled else t


def shard_dataset(data: Dataset, ctx: DistContext) -> Dataset:
    """This process's share of a dataset (for evaluation split across processes)."""
    if not ctx.enabled:
        return data
    return Dataset(data.name, data.split, shard(data.x, ctx), shard(data.y, ctx), data.class_names)


def gather_rows(z: torch.Tensor, total: int, ctx: DistContext) -> torch.Tensor:
    """Every process's rows of a global batch of ``total`` rows, in rank order, with gradients to each owner.

    Shares may differ by one row (the last batch of an epoch), so each share is zero-padded to the
    largest, gathered, and trimmed again.
    """
    if not ctx.enabled:
        return z
    sizes = [len(part) for part in torch.tensor_split(torch.empty(total, 0), ctx.world_size)]
    if len(z) != sizes[ctx.rank]:
        raise ValueError(f"process {ctx.rank} holds {len(z)} rows of a global batch of {total}; expected {sizes[ctx.rank]}.")
    padded = F.pad(z, (0, 0, 0, max(sizes) - len(z)))
    with _quiet_deprecation():
        parts = _dist_nn().all_gather(padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def agree(flag: bool, ctx: DistContext) -> bool:
    """True on every process if ``flag`` is True on any (one all-reduce); the flag itself for one process."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def weighted_mean(value: float, weight: float, ctx: DistContext) -> float:
    """``sum(value * weight) / sum(weight)`` over processes (e.g. accuracies of test shards); ``value`` alone for one."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value * weight, weight], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t[0] / t[1]) if float(t[1]) > 0 else float("nan")


@contextlib.contextmanager
def main_first(ctx: DistContext, active: bool = True) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. a download), the others after it: no two processes write the same files."""
    if not (ctx.enabled and active):
        yield
        return
    if not ctx.is_main:
        dist.barrier()
    yield
    if ctx.is_main:
        dist.barrier()


def _dist_nn() -> Any:
    """``torch.distributed.nn.functional`` (collectives with autograd whose backward works on gloo too).

    torch marks it deprecated in favour of ``_functional_collectives``, whose gather backward needs a
    reduce-scatter that gloo lacks; we keep the public module and silence only its deprecation notice.
    """
    import torch.distributed.nn.functional as dist_nn

    return dist_nn


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.", category=FutureWarning)
        yield


# -- batch norm over the global batch ---------------------------------------------------------


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch across all processes.

    The same computation as ``torch.nn.SyncBatchNorm`` (mean and biased variance of the global batch for
    normalising, unbiased variance into the running estimate), written with the autograd-aware
    ``torch.distributed.nn.functional.all_reduce`` so it works with gloo on CPU. Outside a process group of
    more than one process, or in eval mode, it is plain ``F.batch_norm``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        synced = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not synced:
            return super().forward(x)
        all_reduce = _dist_nn().all_reduce
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        count = x.new_full((1,), x.numel() / c)
        with _quiet_deprecation():
            sums = all_reduce(torch.cat([x.sum(dims), count]))  # two passes: mean first, then centred squares
            n = sums[c]
            mean = sums[:c] / n
            centred = x - mean.view(shape)
            var = all_reduce(centred.pow(2).sum(dims)) / n
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr, operator]
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp(min=1))
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        return out


def _swap_batchnorm(module: nn.Module, make: Callable[[nn.modules.batchnorm._BatchNorm], nn.Module],
                    swapped: list[tuple[nn.Module, str, nn.Module]]) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, make(child))
            swapped.append((module, name, child))
        else:
            _swap_batchnorm(child, make, swapped)


def global_batchnorm(model: nn.Module, device: torch.device) -> Callable[[], None]:
    """Replace every batch-norm layer by one that normalises with the global batch; returns ``undo``.

    The new layers share the original parameters and running-statistics tensors, so ``undo()`` (which puts
    the original layers back) keeps everything that training changed. CUDA: ``torch.nn.SyncBatchNorm``;
    other devices: ``GlobalBatchNorm``.
    """
    cls: type[nn.modules.batchnorm._BatchNorm] = nn.SyncBatchNorm if device.type == "cuda" else GlobalBatchNorm

    def make(bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        if bn.affine:
            new.weight, new.bias = bn.weight, bn.bias
        new.running_mean, new.running_var = bn.running_mean, bn.running_var
        new.num_batches_tracked = bn.num_batches_tracked
        new.train(bn.training)
        return new

    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    _swap_batchnorm(model, make, swapped)

    def undo() -> None:
        for parent, name, original in reversed(swapped):
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)

    return undo


# -- the model as seen by the training loop ---------------------------------------------------


class _Embed(nn.Module):
    """``model.embed`` as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model: LatentClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)


def wrap_for_training(
    model: LatentClassifier, ctx: DistContext, sync_batchnorm: bool
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[], None]]:
    """The function that maps a batch to latents during training, and ``undo`` to call when training ends.

    One process: ``model.embed`` itself. Several: ``DistributedDataParallel`` around it (all parameters,
    the loss head's included, get averaged gradients), with global batch norm when ``sync_batchnorm``.
    """
    if not ctx.enabled:
        return model.embed, lambda: None
    from torch.nn.parallel import DistributedDataParallel

    undo = global_batchnorm(model, ctx.device) if sync_batchnorm else (lambda: None)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(_Embed(model), device_ids=device_ids), undo
