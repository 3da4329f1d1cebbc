"""`make run`'s pieces end to end, on a small demo: migrate, load_demo --limit,
collectstatic, then scripts/run.sh (a Celery worker on the file-system broker and the
web server). The pages answer, static files are served with DEBUG off, an import
started through the API is run by the worker, and stopping the script stops the worker.

Everything runs in a temporary RETAG_VAR_DIR with the embedded defaults (SQLite, the
file-system broker), whatever database the rest of the suite uses.
"""
import http.client
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration
PASSWORD = "run-script-pw"


def embedded_env(var_dir: Path, port: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "STORAGE_URI", "RETAG_IMPORT_ROOTS",
                        "DJANGO_SETTINGS_MODULE", "DEBUG")}
    env.update(RETAG_VAR_DIR=str(var_dir), PORT=str(port), RETAG_DEMO_PASSWORD=PASSWORD,
               PYTHON=sys.executable, WORKER_CONCURRENCY="1")
    return env


def manage(env, *args):
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=120)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_run_script_serves_the_demo_and_stops_the_worker(tmp_path):
    var_dir, port = tmp_path / "var", free_port()
    env = embedded_env(var_dir, port)
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "load_demo", "--limit", "6", "--quiet")
    manage(env, "collectstatic", "--noinput", "-v0")

    out = open(tmp_path / "run.out", "w+")
    proc = subprocess.Popen(["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    worker_pid = None
    try:
        banner = wait_for(lambda: "Press Ctrl-C" in (text := (tmp_path / "run.out").read_text()) and text,
                          timeout=90, what="the run script's banner")
        base = f"http://127.0.0.1:{port}"
        assert f"{base}/" in banner and "admin" in banner and "Worker      ready" in banner
        worker_pid = int((var_dir / "worker.pid").read_text())

        login = requests.get(f"{base}/accounts/login/", timeout=10)
        assert login.status_code == 200 and 'name="password"' in login.text
        css = re.search(r'href="(/static/[^"]+\.css)"', login.text)
        assert css, "the login page links no stylesheet"
        # Static files are served with DEBUG off.
        assert requests.get(base + css.group(1), timeout=10).status_code == 200
        # A path climbing out of the static folder, encoded as an attacker would: 400/404, not a 500
        # (runserver --insecure's static handler let SuspiciousFileOperation out as a 500).
        for path in ("/static/..%2f..%2fsettings.py", "/static/%2e%2e/%2e%2e/labeling/settings.py"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)  # as sent: no client-side normalizing of the dots
            answer = conn.getresponse()
            assert answer.status in (400, 404) and b"SECRET_KEY" not in answer.read(), (path, answer.status)
            conn.close()

        session = requests.Session()
        session.get(f"{base}/accounts/login/", timeout=10)
        r = session.post(f"{base}/accounts/login/", timeout=10, data={
            "username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
            headers={"Referer": f"{base}/accounts/login/"})
        assert r.status_code == 200 and r.url == f"{base}/", r.url
        assert "Clothing" in r.text and "Fashion-MNIST" in r.text

        # An import queued through the API is picked up by the worker.
        demo = var_dir / "demo" / "fashion-mnist"
        rows = (demo / "manifest.csv").read_text().splitlines()
        (demo / "more.csv").write_text("\n".join([rows[0], *rows[7:10]]) + "\n")
        auth = ("admin", PASSWORD)
        project = next(p for p in requests.get(f"{base}/api/projects/", auth=auth, timeout=10).json()["results"]
                       if p["name"] == "Fashion-MNIST")
        job = requests.post(f"{base}/api/imports/", auth=auth, timeout=10, json={
            "project": project["id"], "kind": "manifest", "source_uri": (demo / "more.csv").as_uri()})
        assert job.status_code == 201, job.text
        done = wait_for(lambda: (j := requests.get(f"{base}/api/imports/{job.json()['id']}/", auth=auth,
                                                   timeout=10).json())["state"] in ("done", "failed") and j,
                        timeout=60, what="the worker to run the import")
        assert done["state"] == "done" and done["added"] == 3, done

        assert requests.get(f"{base}/api/schema/", auth=auth, timeout=10).status_code == 200
        assert " ready." in (var_dir / "log" / "worker.log").read_text()

        proc.send_signal(signal.SIGTERM)  # as when the terminal closes; Ctrl-C sends SIGINT
        assert proc.wait(60) == 143  # the TERM trap stops the worker, then exits 128+15
        wait_for(lambda: not alive(worker_pid), timeout=30, what="the worker to stop")
        assert "Retag stopped." in (tmp_path / "run.out").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if worker_pid and alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)
        out.close()
