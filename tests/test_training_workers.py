"""Training on the paths real machines take: each run trains in a process of its own
(services.run_process), where mlcore's DataLoader may start workers, whatever Celery pool
runs the task.

- a worker started exactly as ``make run`` starts it (``scripts/run.sh worker``: the same
  command line, ``-B``, both queues, prefork, concurrency 2) trains a run with
  ``"workers": 2``; a second delivery of the run's message while it trains does nothing;
- a worker started with the README's production command for the gpu queue trains a run with
  ``"workers": 2`` and one with the default worker count on a machine whose
  ``os.cpu_count()`` says 16 (a sitecustomize in the worker's PYTHONPATH);
- a worker killed with SIGKILL (all its processes but the training process) leaves no
  training behind; a run past its time limit fails with the reason, its process gone;
- in this process: a lost lease kills the training process without writing, and a training
  process that dies without a word sends the run back to the queue.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labeling.models import TrainingRun
from labeling.services import runs
from labeling.services.run_process import MODULE
from labeling.services.run_results import read_json
from labeling.tasks import train_run, train_suspects_fold
from mlcore import storage
from tests.conftest import ROOT, wait_for
from tests.test_runs import TINY, colour_project
from tests.test_runs_integration import CONFIG, WORKER_ENV, assert_results_match_files, import_fashion

pytestmark = pytest.mark.integration
State = TrainingRun.State
LOADER = {**CONFIG, "workers": 2}


@pytest.fixture
def small_fashion(transactional_db, tmp_path):
    """96 train + 32 test Fashion-MNIST images: three steps of 32, loader workers and all."""
    return import_fashion(tmp_path, n_train=96, n_test=32)


# --------------------------------------------------------------------------- helpers

def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process on this machine (Linux /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        out[int(entry.name)] = (ppid, cmdline)
    return out


def descendants(pid: int) -> set[int]:
    table = processes()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (pp, _) in table.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(")")[-1].split()[0] != "Z"  # a zombie has stopped
    except OSError:
        return False


def training_processes(root: int) -> set[int]:
    table = processes()
    return {p for p in descendants(root) if p in table and MODULE in table[p][1]}


def process_entry(run: TrainingRun) -> dict | None:
    """The history entry the parent wrote when the training process said hello."""
    return next((h for h in reversed(run.history) if h.get("kind") == "process"), None)


def wait_done(run: TrainingRun, timeout: float = 180) -> TrainingRun:
    wait_for(lambda: run.refresh_from_db() or run.state in TrainingRun.FINAL_STATES, timeout=timeout,
             interval=0.3, what=f"run {run.id} to finish")
    return run


def assert_trained_with_loader_workers(run: TrainingRun, expected: int) -> dict:
    assert run.state == State.DONE, run.state_reason
    assert run.attempts == 1
    run_json = read_json(storage.join(run.output_uri, "run.json"))
    assert run_json["environment"]["loader_workers"] == expected > 0
    proc = process_entry(run)
    assert proc and not alive(proc["pid"])  # the run's training process is gone
    assert proc["device"].split(" ")[0].rstrip(":") == run.device.split(" ")[0].rstrip(":")  # cpu / cuda
    assert_results_match_files(run)
    return run_json


def readme_gpu_worker() -> tuple[dict, list[str]]:
    """The README's production command for the gpu queue: (environment, argv)."""
    text = (ROOT / "README.md").read_text()
    line = next(ln.strip() for ln in text.splitlines()
                if re.search(r"celery -A labeling worker .*-Q gpu", ln) and "=" in ln.split("celery")[0])
    words = shlex.split(line)
    env = dict(w.split("=", 1) for w in words[:words.index("celery")])
    argv = words[words.index("celery") + 1:]
    return env, [sys.executable, "-m", "celery", *argv]


def cpu16_site(tmp_path) -> dict:
    """Environment that makes ``os.cpu_count()`` report 16 in the worker and its children."""
    site = tmp_path / "cpu16"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.cpu_count = lambda: 16\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


# --------------------------------------------------------------------------- real workers

def test_make_run_worker_trains_with_loader_workers_and_ignores_a_redelivery(small_fashion, celery_worker_factory,
                                                                             scientist, tmp_path):
    log = tmp_path / "worker-var" / "log" / "worker.log"
    worker = celery_worker_factory("redis", command=["bash", "scripts/run.sh", "worker"], log_path=log,
                                   extra_env={**WORKER_ENV, "PYTHON": sys.executable})
    banner = (tmp_path / "worker-0.log").read_text()  # the worker's stdout (make run appends it to the log)
    assert re.search(r"concurrency:\s*2 \(prefork\)", banner), banner[:3000]
    assert ".> gpu" in banner and ".> default" in banner

    run = runs.start_training_run(task=small_fashion, config={**LOADER, "batch_size": 8}, by=scientist)
    wait_for(lambda: run.refresh_from_db() or (run.progress or {}).get("phase") == "train", timeout=120,
             interval=0.1, what="training to start")
    again = train_run.delay(run.id)  # what the broker does when it redelivers the message
    wait_for(lambda: f"[{again.id}] succeeded" in log.read_text(), timeout=60, what="the second delivery")
    run.refresh_from_db()
    assert run.state == State.RUNNING and run.attempts == 1  # the second delivery did nothing
    assert "duplicate delivery ignored" in log.read_text()

    wait_done(run)
    assert_trained_with_loader_workers(run, 2)
    assert [h["kind"] for h in run.history].count("attempt") == 1
    assert worker.poll() is None and not training_processes(worker.pid)


def test_production_gpu_worker_trains_with_loader_workers_and_the_default_on_16_cores(
        small_fashion, celery_worker_factory, scientist, tmp_path):
    import torch

    from mlcore.device import default_workers

    env, command = readme_gpu_worker()
    assert "-Q" in command and command[command.index("-Q") + 1] == "gpu" and env.get("CUDA_VISIBLE_DEVICES")
    worker = celery_worker_factory("redis", queues="gpu", command=command,
                                   extra_env={**WORKER_ENV, **env, **cpu16_site(tmp_path)})
    explicit = runs.start_training_run(task=small_fashion, config=LOADER, by=scientist)
    default = {k: v for k, v in LOADER.items() if k != "workers"}
    by_default = runs.start_training_run(task=small_fashion, config=default, by=scientist)
    assert by_default.config.get("workers") is None  # nothing pins it

    assert_trained_with_loader_workers(wait_done(explicit), 2)
    real = os.cpu_count
    try:
        os.cpu_count = lambda: 16
        expected = default_workers(torch.device("cpu"))
    finally:
        os.cpu_count = real
    run_json = assert_trained_with_loader_workers(wait_done(by_default), expected)
    assert run_json["environment"]["cpu_count"] == 16
    assert worker.poll() is None and not training_processes(worker.pid)


def test_killed_worker_leaves_no_training_process_behind(small_fashion, celery_worker_factory, scientist):
    worker = celery_worker_factory("redis", extra_env=WORKER_ENV)
    run = runs.start_training_run(task=small_fashion, config={**LOADER, "batch_size": 4, "epochs": 3},
                                  by=scientist)
    wait_for(lambda: run.refresh_from_db() or (run.progress or {}).get("phase") == "train", timeout=120,
             interval=0.1, what="training to start")
    child = process_entry(run)["pid"]
    assert child in training_processes(worker.pid)
    loader_workers = descendants(child)
    assert len(loader_workers) >= 2  # the DataLoader's worker processes run under it
    # SIGKILL to the worker and its pool processes, not to the training process.
    for pid in {worker.pid} | (descendants(worker.pid) - {child} - loader_workers):
        os.kill(pid, signal.SIGKILL)
    worker.wait()
    wait_for(lambda: not alive(child), timeout=15, interval=0.1, what="the training process to stop")
    wait_for(lambda: not any(alive(p) for p in loader_workers), timeout=30, what="the loader's workers to stop")
    run.refresh_from_db()
    beat = run.heartbeat_at
    time.sleep(2.5)  # two heartbeats (RUN_HEARTBEAT_S=1): nobody writes for the run any more
    run.refresh_from_db()
    assert run.state == State.RUNNING and run.heartbeat_at == beat  # stale: the beat task will resume it


def test_a_run_past_its_time_limit_stops_and_fails_with_the_reason(small_fashion, celery_worker_factory,
                                                                   scientist):
    from django.conf import settings

    worker = celery_worker_factory("redis", extra_env={**WORKER_ENV, "RUN_TIME_LIMIT_S": "12"})
    run = runs.start_training_run(task=small_fashion, config={**LOADER, "batch_size": 4, "epochs": 50},
                                  by=scientist, enqueue=False)
    # The sender puts the task's limits in the message (from its settings, the same everywhere
    # in a deployment); here the test is the sender, with a short one.
    train_run.apply_async((run.id,), soft_time_limit=12, time_limit=12 + settings.TASK_TIME_LIMIT_GRACE_S)
    wait_done(run, timeout=120)
    assert run.state == State.FAILED and "time limit" in run.state_reason and "RUN_TIME_LIMIT_S" in run.state_reason
    assert run.lease == "" and worker.poll() is None and not training_processes(worker.pid)
    # It was asked to stop, not killed: mlcore wrote a checkpoint to resume or inspect.
    assert storage.exists(storage.join(run.output_uri, "checkpoints", "last.pt"))
    assert not storage.exists(storage.join(run.output_uri, "run.json"))


# --------------------------------------------------------------------------- in this process

def test_a_lost_lease_kills_the_training_process(transactional_db, tmp_path, scientist, settings, monkeypatch):
    settings.RUN_HEARTBEAT_S = 0.2
    _, task, _ = colour_project(tmp_path, per_class=8, test_per_class=1)
    run = runs.start_training_run(task=task, config={**TINY, "epochs": 20, "batch_size": 2, "workers": 2},
                                  by=scientist, enqueue=False)
    progress = runs.RunSession.progress

    def taken_over(self, p):  # another worker took the run over (the stale-run check and a claim)
        progress(self, p)
        if p.get("phase") == "train":
            TrainingRun.objects.filter(pk=self.run_id).update(lease="someone-else", worker="other pid 1 on x")

    monkeypatch.setattr(runs.RunSession, "progress", taken_over)
    run = runs.execute_run(run.id, worker="test-worker")
    # Nothing written after the takeover: the new holder's lease, worker and progress stand.
    assert (run.state, run.lease, run.worker) == (State.RUNNING, "someone-else", "other pid 1 on x")
    assert run.progress.get("epoch") == 1 and run.progress.get("phase") == "train"
    child = process_entry(run)["pid"]
    assert not alive(child) and not training_processes(os.getpid())  # killed, not left to train 20 epochs
    assert not storage.exists(storage.join(run.output_uri, "run.json"))


def test_a_time_limit_that_cuts_a_query_short_still_fails_the_run_with_the_reason(transactional_db, tmp_path,
                                                                                 scientist, monkeypatch):
    """The soft time limit is a signal: its exception can land inside a query (a progress
    write), leaving the connection mid-command ("another command is already in progress",
    seen in CI). The run must still be failed with the reason, on a fresh connection, not
    left running for the stale-run check."""
    from celery.exceptions import SoftTimeLimitExceeded
    from django.db import connection

    _, task, _ = colour_project(tmp_path, per_class=4, test_per_class=1)
    run = runs.start_training_run(task=task, config={**TINY, "epochs": 20, "batch_size": 2}, by=scientist,
                                  enqueue=False)
    progress = runs.RunSession.progress

    def cut_short(self, p):
        progress(self, p)
        if p.get("phase") == "train":
            connection.connection.close()  # as a query the signal interrupted leaves it: unusable
            raise SoftTimeLimitExceeded()

    monkeypatch.setattr(runs.RunSession, "progress", cut_short)
    run = runs.execute_run(run.id, worker="test-worker")
    assert run.state == State.FAILED and "time limit exceeded" in run.state_reason and run.lease == ""
    assert not training_processes(os.getpid())


def test_a_training_process_that_dies_sends_the_run_back(transactional_db, tmp_path, scientist, monkeypatch,
                                                         django_capture_on_commit_callbacks):
    _, task, _ = colour_project(tmp_path, per_class=4, test_per_class=1)
    run = runs.start_training_run(task=task, config=TINY, by=scientist, enqueue=False)
    started = runs.RunSession.started

    def oom_killed(self, *, pid, device):  # as the kernel's OOM killer would
        started(self, pid=pid, device=device)
        os.kill(pid, signal.SIGKILL)

    monkeypatch.setattr(runs.RunSession, "started", oom_killed)
    sent = []
    monkeypatch.setattr(runs.lease, "enqueue_run", sent.append)  # where recover_lost looks it up
    with django_capture_on_commit_callbacks(execute=True):
        run = runs.execute_run(run.id, worker="test-worker")
    assert run.state == State.QUEUED and run.lease == "" and sent == [run.id]
    assert "killed by SIGKILL" in run.state_reason and "resuming" in run.state_reason
    assert run.history[-1]["kind"] == "lost" and "SIGKILL" in run.history[-1]["reason"]

    # The last attempt fails, with what happened.
    TrainingRun.objects.filter(pk=run.pk).update(attempts=runs.max_attempts() - 1)
    with django_capture_on_commit_callbacks(execute=True):
        run = runs.execute_run(run.id, worker="test-worker")
    assert run.state == State.FAILED and sent == [run.id]
    assert f"lost {runs.max_attempts()} times" in run.state_reason and "SIGKILL" in run.state_reason


def test_time_limits_and_visibility_timeout_come_from_the_settings():
    """Training tasks have the generous limit; a Redis broker never redelivers inside it."""
    from django.conf import settings

    for task in (train_run, train_suspects_fold):
        assert task.soft_time_limit == settings.RUN_TIME_LIMIT_S
        assert task.time_limit > task.soft_time_limit
    code = ("import django, os; django.setup(); from django.conf import settings as s; "
            "print(s.CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'], s.CELERY_TASK_TIME_LIMIT)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, CELERY_BROKER_URL="redis://127.0.0.1:1/0", RUN_TIME_LIMIT_S="900000",
                                  DJANGO_SETTINGS_MODULE="labeling.settings"))
    assert out.returncode == 0, out.stderr
    visibility, task_limit = map(float, out.stdout.split())
    assert visibility > 900000 + settings.TASK_TIME_LIMIT_GRACE_S and visibility > task_limit
