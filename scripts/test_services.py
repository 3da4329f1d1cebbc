"""Make sure the services the test suite talks to are up, before pytest starts.

PostgreSQL, Redis and RabbitMQ on loopback, and Debian's chromium for browser tests.
A service that is down is started (the same commands the machine uses at boot); a
missing chromium is installed with apt-get. Then this writes ``var/test.env`` with
the variables the suite runs with.

In CI (``CI`` set) anything still missing is an error: the suite must not pass by
skipping. On a developer's machine it falls back (SQLite, no broker tests) with a
loud warning.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CI = bool(os.environ.get("CI"))

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/retag")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

START = {
    "postgresql": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main start",
    "redis": "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no "
             "--dir /var/lib/redis --logfile /var/log/redis/ci.log",
    "rabbitmq": "rabbitmq-server -detached",
}
PORTS = {"postgresql": 5432, "redis": 6379, "rabbitmq": 5672}


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def check_postgresql() -> None:
    import psycopg

    from urllib.parse import urlsplit, urlunsplit

    # The server of PG_URL, through its maintenance database (the test database may not exist yet).
    server = urlunsplit(urlsplit(PG_URL)._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(server, connect_timeout=3) as c:
        c.execute("select 1")


def check_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()


def check_rabbitmq() -> None:
    from kombu import Connection

    with Connection(AMQP_URL, connect_timeout=3) as c:
        c.ensure_connection(max_retries=1)


CHECKS = {"postgresql": check_postgresql, "redis": check_redis, "rabbitmq": check_rabbitmq}


def ensure(name: str) -> str | None:
    """None when the service answers, else why not."""
    try:
        CHECKS[name]()
        return None
    except Exception as first:  # noqa: BLE001 - any failure means "try starting it"
        print(f"[services] {name} does not answer ({first}); starting it", flush=True)
    subprocess.run(START[name], shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            CHECKS[name]()
            return None
        except Exception as e:  # noqa: BLE001
            err = str(e)
            time.sleep(1)
    return err


def ensure_chromium() -> str | None:
    if shutil.which("chromium"):
        return None
    print("[services] chromium missing; installing Debian's chromium with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode:
            return f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}"
    return None if shutil.which("chromium") else "chromium still not on PATH after apt-get"


def main() -> int:
    missing = {name: err for name in CHECKS if (err := ensure(name))}
    if err := ensure_chromium():
        missing["chromium"] = err
    env = {
        "DATABASE_URL": PG_URL,
        "TEST_REDIS_URL": REDIS_URL,
        "TEST_AMQP_URL": AMQP_URL,
        "CHROMIUM": shutil.which("chromium") or "",
        "RETAG_MISSING_SERVICES": ",".join(sorted(missing)),
    }
    if missing:
        for name, err in missing.items():
            print(f"[services] MISSING {name}: {err}", file=sys.stderr)
        if CI:
            print("[services] CI needs every service; failing.", file=sys.stderr)
            return 1
        print("[services] WARNING: tests that need these services will be skipped; "
              "this run does not count as a full pass.", file=sys.stderr)
        if "postgresql" in missing:
            env["DATABASE_URL"] = ""
            print("[services] WARNING: falling back to SQLite.", file=sys.stderr)
    out = ROOT / "var" / "test.env"
    out.parent.mkdir(exist_ok=True)
    out.write_text("".join(f"{k}='{v}'\n" for k, v in env.items()))
    print(f"[services] ok: {', '.join(n for n in [*CHECKS, 'chromium'] if n not in missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
