"""Each training run trains in a process of its own: ``python -m labeling.services.run_process``,
started fresh for the run by the worker that holds its lease (services.runs.execute_run).

Why a child process per run (and not, say, the gpu queue on a pool whose processes may have
children):

- Celery's prefork pool runs tasks in *daemonic* processes, and a daemonic process may not
  start multiprocessing children: mlcore's DataLoader workers (``workers`` > 0, its default on
  CUDA and on CPUs with more than 2 cores) failed at once with "daemonic processes are not
  allowed to have children". A process started with ``subprocess`` (fork + exec) is an
  ordinary one, so its DataLoader starts workers whatever pool the Celery worker runs and
  however it was started (``make run``'s prefork worker on both queues, a production gpu
  worker, ``manage.py train --here``). A pool choice would fix one command line and leave
  the others broken.
- A process that exits frees everything it held: CUDA memory and the caching allocator,
  cuDNN workspaces, pinned buffers, the loader's workers. One run never starves the next on
  the same GPU, and the Celery pool process never touches CUDA.
- A crash inside training (a kernel's segfault, the OOM killer) takes the child, not the
  worker, and the worker records what happened.

The split of work: the parent (the Celery pool process) keeps everything that touches the
database: the lease, the heartbeat thread, progress writes, cancel polls and the final
state. The child imports mlcore and nothing of Django: it trains and reports.

The protocol. Parent to child, on the child's stdin: one JSON line, the keyword arguments of
``mlcore.train.TrainConfig``; later ``stop`` (a cancel: mlcore writes a checkpoint at its
next step and stops). End of file on stdin means the parent is gone (killed with the worker,
``kill -9``, a hard time limit): the child exits at once without writing anything, as if
killed with it, so that no orphan trains on beside the worker that resumes the run (it also
watches its parent pid, in case the pipe were ever held open elsewhere). Child to parent,
one JSON object a line on the file descriptor named by its argument: ``hello`` (pid and
device), ``progress`` (mlcore's callback), then one of ``done``, ``cancelled`` or ``error``.
The child ignores SIGINT: a Ctrl-C in the worker's terminal is the worker's to handle (a warm
shutdown lets the run finish); a child that dies without a last word is reported as lost.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

PARENT_GONE = 75          # the child's exit status when its parent went away
MODULE = "labeling.services.run_process"


# --------------------------------------------------------------------------- parent side

class TrainingProcess:
    """The parent's handle on one child: start it, read its messages, stop or kill it."""

    def __init__(self, config: dict, *, cwd: str, env: dict | None = None):
        read_fd, write_fd = os.pipe()
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", MODULE, str(write_fd)], stdin=subprocess.PIPE,
                                         pass_fds=(write_fd,), cwd=cwd, env=env)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.pid = self.proc.pid
        self._fd = read_fd
        self._buf = b""
        self._eof = False
        self.stop_sent = False
        self._send(json.dumps(config))

    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):  # it died: read() reports how
            pass

    def read(self, timeout: float) -> list[dict] | None:
        """The messages that arrived within ``timeout`` seconds ([] if none); None once the
        child closed its end (it exited)."""
        if self._eof:
            return None
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            if self.proc.poll() is not None:  # exited; its loader's workers may hold the pipe a while
                self._eof = True
                return None
            return []
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            self._eof = True
            lines, self._buf = [self._buf] if self._buf.strip() else [], b""
        else:
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
        out = []
        for line in lines:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"kind": "garbled", "line": line[:200].decode(errors="replace")})
        return out if out or not self._eof else None

    def stop(self) -> None:
        """Ask for a graceful stop (a cancel): mlcore checkpoints at its next step."""
        if not self.stop_sent:
            self.stop_sent = True
            self._send("stop")

    def exit_description(self, timeout: float = 10) -> str:
        """How the child ended, for a run's reason: "exited with status 1", "killed by SIGKILL"."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return "still running"
        if rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            hint = " (out of memory?)" if -rc == signal.SIGKILL else ""
            return f"killed by {name}{hint}"
        return f"exited with status {rc}"

    def close(self, *, grace: float = 0.0) -> None:
        """Make sure the child is gone: wait up to ``grace`` seconds, then SIGKILL, then reap."""
        if self.proc.poll() is None and grace:
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin,):
            try:
                f.close()
            except OSError:
                pass
        try:
            os.close(self._fd)
        except OSError:
            pass


# --------------------------------------------------------------------------- child side

def device_name(device) -> str:
    """What the run page shows as the run's device."""
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"[:100]
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"[:100]


def _gone() -> None:
    os._exit(PARENT_GONE)


class _Commands:
    """The parent's pipe, read from its raw file descriptor.

    Not through ``sys.stdin``: a thread blocked in ``sys.stdin.readline()`` holds the file
    object's lock, a forked DataLoader worker inherits it locked, and multiprocessing's
    bootstrap closes ``sys.stdin`` in every child: the loader's workers deadlocked at birth.
    So the pipe moves to a descriptor of its own and ``sys.stdin`` becomes /dev/null.
    """

    def __init__(self):
        self.fd = os.dup(0)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdin = open(os.devnull)
        self._buf = b""

    def readline(self) -> bytes | None:
        """The next line, or None at end of file (the parent is gone)."""
        while b"\n" not in self._buf:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line


def _listen(commands: _Commands, stop: threading.Event) -> None:
    """``stop`` lines; end of file when the parent is gone."""
    while (line := commands.readline()) is not None:
        if line.strip() == b"stop":
            stop.set()
    _gone()


def _watch_parent(ppid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != ppid:
            _gone()


def _failed(send, e: Exception) -> int:
    import traceback

    traceback.print_exc()  # the whole story in the worker's log
    send(kind="error", error=f"{type(e).__name__}: {e}"[:2000])
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(int(argv[0]), "w", buffering=1)
    lock = threading.Lock()

    def send(**message) -> None:
        try:
            with lock:
                out.write(json.dumps(message) + "\n")
        except (BrokenPipeError, OSError):
            _gone()

    ppid = os.getppid()
    commands = _Commands()
    line = commands.readline()
    if line is None:
        _gone()
    config = json.loads(line)
    stop = threading.Event()
    threading.Thread(target=_listen, args=(commands, stop), name="parent-pipe", daemon=True).start()
    threading.Thread(target=_watch_parent, args=(ppid,), name="parent-watch", daemon=True).start()

    try:
        from mlcore.device import resolve_device
        from mlcore.train import Cancelled, TrainConfig, train
    except Exception as e:  # noqa: BLE001 - a broken install: the run shows why
        return _failed(send, e)
    try:
        send(kind="hello", pid=os.getpid(), device=device_name(resolve_device(config.get("device", "auto"))))
        train(TrainConfig(**config), progress=lambda p: send(kind="progress", p=p), should_stop=stop.is_set)
    except Cancelled:
        send(kind="cancelled")
        return 0
    except Exception as e:  # noqa: BLE001 - every failure goes to the run's reason
        return _failed(send, e)
    send(kind="done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
