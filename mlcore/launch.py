"""The caller's side of a data-parallel run: start torchrun, relay progress and stop, raise the outcome.

:func:`launch` runs :mod:`mlcore.distributed` (the ranks' side) under torchrun in a child
process and reads back the lines its rank 0 prints (``PROGRESS`` and ``OUTCOME``); see
:mod:`mlcore.distributed` for why a subprocess and what stays as in one process. It is a
module of its own so that :mod:`mlcore.train` can start a run without importing the ranks'
code, which imports it.
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
from pathlib import Path
from typing import Callable

from . import storage
from .loop import Cancelled

PROGRESS = "MLCORE_PROGRESS "
OUTCOME = "MLCORE_OUTCOME "


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
