"""Several GPUs on one machine: a run with ``gpus: N`` trains with DistributedDataParallel.

:func:`mlcore.train.train` sees ``gpus > 1`` and calls :func:`mlcore.launch.launch`, which runs this
module under ``torchrun`` (``python -m torch.distributed.run``: torch's elastic launcher
starts the N processes, gives them their rank and a rendezvous on 127.0.0.1, and stops
them all when one fails) in a child process. Why a subprocess and not ``mp.spawn``: the
caller may be a Celery worker's daemonic process, which may not have children of its own
kind, and a crash of a rank then cannot take the caller with it.

What stays as in one process, so that checkpoints, resume and metrics are the same:
- the data: every process walks the same global batches (:class:`~mlcore.data.EpochBatches`
  with ``rank``/``world``) and takes every N-th image of each, with the same seeded crops;
- the gradient: each process's loss is its share of the global batch's weighted mean (the
  class-weight sums are all-reduced with the batch), batch norm is synchronised on GPUs
  (``SyncBatchNorm``), so the mean of the N gradients is the one-process gradient;
- the files: rank 0 alone validates, checkpoints and writes the run's outputs, in the
  one-process format (the plain model's state_dict, not DDP's); resume loads them on all ranks;
- the control: rank 0 streams its progress dicts to the caller as JSON lines; the caller's
  ``should_stop`` becomes a stop file that rank 0 reads, and the ranks agree on it every step
  over a CPU (gloo) group, which costs no GPU synchronisation.

On the CPU (tests) the backend is gloo, on CUDA it is NCCL with one GPU per process
(``cuda:LOCAL_RANK``). Several machines: see the README (torchrun's c10d rendezvous).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as tdist

from .launch import OUTCOME, PROGRESS, launch  # noqa: F401 - the caller's side, importable from here


@dataclass
class Dist:
    """This process's place in a data-parallel run."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    cpu_group: object = None  # gloo group for host-side flags (the stop vote)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP around ``model``; on GPUs its batch norms synchronised (in place: keys stay the same).

        torch's SyncBatchNorm runs on GPUs only: on the CPU (gloo) each process normalises
        over its own share of the batch, so a CPU run with batch norm in training mode is
        close to, not equal to, one process (a frozen backbone, BN in eval mode, is equal).
        """
        from torch.nn.parallel import DistributedDataParallel as DDP

        if self.device.type == "cuda" and torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) is not model:
            raise TypeError("expected a model whose batch norms are children, not the model itself")
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, broadcast_buffers=False)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        tdist.all_reduce(t)
        return t

    def agree(self, flag: bool) -> bool:
        """True on every rank when any rank says so (CPU tensor over gloo: no GPU sync)."""
        t = torch.tensor([int(bool(flag))])
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=self.cpu_group)
        return bool(t.item())

    def broadcast(self, obj):
        box = [obj if self.main else None]
        tdist.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]

    def merge(self, d: dict) -> dict:
        """The union of every rank's dict (e.g. unreadable images), on every rank."""
        parts = [None] * self.world
        tdist.all_gather_object(parts, d, group=self.cpu_group)
        out: dict = {}
        for p in parts:
            out.update(p)
        return out

    def barrier(self) -> None:
        tdist.barrier(group=self.cpu_group)


def device_for(name: str, local_rank: int) -> torch.device:
    """``cpu`` stays the CPU (gloo); ``auto``/``cuda`` become this process's GPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init(device_name: str) -> Dist:
    """Join the process group that torchrun set up in the environment."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = device_for(device_name, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    cpu_group = tdist.new_group(backend="gloo") if device.type == "cuda" else tdist.group.WORLD
    return Dist(tdist.get_rank(), tdist.get_world_size(), local, device, cpu_group)


# --------------------------------------------------------------------------- a rank

def _print(prefix: str, obj: dict) -> None:
    sys.stdout.write(prefix + json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    """One rank: ``python -m mlcore.distributed CONFIG_JSON STOP_FILE`` (torchrun runs it)."""
    from .train import Cancelled, TrainConfig, run_training  # the ranks' side only: train imports launch

    cfg_path, stop_path = argv
    config = TrainConfig(**json.loads(Path(cfg_path).read_text()))
    dist = init(config.device)
    report = (lambda p: _print(PROGRESS, p)) if dist.main else None
    try:
        run_training(config, progress=report, should_stop=lambda: dist.main and os.path.exists(stop_path),
                     dist=dist)
        outcome = {"status": "completed"}
    except Cancelled as e:
        outcome = {"status": "cancelled", "message": str(e)}
    except Exception as e:  # noqa: BLE001 - reported to the caller, which raises it there
        import traceback

        traceback.print_exc()
        outcome = {"status": "error", "type": type(e).__name__, "message": str(e)}
    if dist.main:
        _print(OUTCOME, outcome)
    tdist.destroy_process_group()
    return 0 if outcome["status"] != "error" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
