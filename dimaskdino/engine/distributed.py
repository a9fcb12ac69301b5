"""Process-group helpers: one code path for a single process and ``torchrun`` launches.

``torchrun --nproc-per-node N -m dimaskdino train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; the group uses NCCL when CUDA is available and gloo otherwise.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def init_from_environment() -> torch.device:
    """Join the process group ``torchrun`` describes (if any) and return this process's
    device (``cuda:LOCAL_RANK`` on GPU machines, else CPU)."""
    use_cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average scalars over processes (identity in a single process)."""
    if not is_distributed() or not values:
        return values
    tensor = torch.tensor(list(values.values()), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return dict(zip(values, (tensor / world_size()).tolist()))


def gather_lists(items: list) -> list:
    """Concatenate every process's list on every process (evaluation results)."""
    if not is_distributed():
        return items
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(value):
    """The main process's ``value`` (any picklable object) on every process."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_state(module: torch.nn.Module) -> None:
    """Overwrite every parameter and buffer of ``module`` with the main process's."""
    if not is_distributed():
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src=0)
