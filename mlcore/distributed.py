"""Several GPUs on one machine: a run with ``gpus: N`` trains with DistributedDataParallel.

:func:`mlcore.train.train` sees ``gpus > 1`` and calls :func:`launch`, which runs this
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

import dataclasses
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as tdist

PROGRESS = "MLCORE_PROGRESS "
OUTCOME = "MLCORE_OUTCOME "


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


# --------------------------------------------------------------------------- the caller's side

def _die_with_parent() -> None:
    """In the child before exec: torchrun gets SIGTERM (and stops its ranks) if the caller dies,
    so a killed worker leaves no training behind to race the run's next attempt."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch(config, progress: Callable[[dict], None] | None = None,
           should_stop: Callable[[], bool] | None = None) -> dict:
    """Train ``config`` with ``config.gpus`` processes under torchrun; returns run.json's dict.

    Raises what one process would: :class:`~mlcore.train.Cancelled` after a stop,
    ``ValueError`` for a bad manifest or config, ``RuntimeError`` with the ranks' last
    output for anything else. Whatever the caller's callbacks raise (a lost lease) stops
    the ranks first.
    """
    from . import storage
    from .train import Cancelled

    with tempfile.TemporaryDirectory(prefix="mlcore-ddp-") as tmp:
        cfg_path, stop_path, log_path = Path(tmp, "config.json"), Path(tmp, "stop"), Path(tmp, "ranks.log")
        cfg_path.write_text(json.dumps(dataclasses.asdict(config)))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc-per-node", str(config.gpus), "--local-addr", "127.0.0.1",
               "-m", "mlcore.distributed", str(cfg_path), str(stop_path)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get(
            "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // config.gpus))))
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else root
        with open(log_path, "w+b") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env, preexec_fn=_die_with_parent)
            lines: queue.Queue = queue.Queue()
            reader = threading.Thread(target=lambda: [lines.put(x) for x in iter(proc.stdout.readline, b"")],
                                      daemon=True)
            reader.start()
            outcome = None
            try:
                while True:
                    try:
                        line = lines.get(timeout=0.2).decode("utf-8", "replace")
                    except queue.Empty:
                        line = None
                    if line and line.startswith(PROGRESS) and progress:
                        progress(json.loads(line[len(PROGRESS):]))
                    elif line and line.startswith(OUTCOME):
                        outcome = json.loads(line[len(OUTCOME):])
                    if should_stop is not None and not stop_path.exists() and should_stop():
                        stop_path.touch()
                    if line is None and proc.poll() is not None and not reader.is_alive():
                        break
            except BaseException:
                _stop(proc)
                raise
            proc.wait()
            log.seek(0)
            tail = log.read().decode("utf-8", "replace")[-4000:]
    if outcome is None:
        raise RuntimeError(f"distributed training ended without a result (exit {proc.returncode}):\n{tail}")
    if outcome["status"] == "cancelled":
        raise Cancelled(outcome["message"])
    if outcome["status"] == "error":
        kind = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError}.get(outcome["type"], RuntimeError)
        raise kind(outcome["message"])
    return json.loads(storage.read_bytes(storage.join(config.output_uri, "run.json")))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


# --------------------------------------------------------------------------- a rank

def _print(prefix: str, obj: dict) -> None:
    sys.stdout.write(prefix + json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    """One rank: ``python -m mlcore.distributed CONFIG_JSON STOP_FILE`` (torchrun runs it)."""
    from .train import Cancelled, TrainConfig, run_training

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
