#!/usr/bin/env bash
# Serve Retag on one machine: a Celery worker in the background, the web app in front.
#
# `make run` calls this after migrate, load_demo and collectstatic. Ctrl-C stops both.
# `scripts/run.sh worker` runs only the worker, in the foreground, with the same command line.
#
#   PORT=8000 HOST=127.0.0.1   where the web app listens
#   WORKER_CONCURRENCY=2       worker processes (queues default and gpu)
#   RETAG_VAR_DIR=var          database, storage, broker and logs (see labeling/settings.py)
#   PYTHON=.venv/bin/python
#
# The web server is Django's runserver with --nostatic: the app serves the collected static
# files itself with DEBUG off (SERVE_STATIC, labeling/urls.py), fine for the embedded default
# on a loopback address. In production run a WSGI server behind a proxy instead (README.md,
# "Production").
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
VAR_DIR=${RETAG_VAR_DIR:-var}
LOG_DIR="$VAR_DIR/log"
WORKER_LOG="$LOG_DIR/worker.log"
mkdir -p "$LOG_DIR"

# The worker: both queues (imports and MTurk on default, training runs on gpu; each run trains
# in a process of its own, see labeling/services/run_process.py), the prefork pool, and beat
# (-B): the periodic MTurk sync, the stale-run check and the suspects runs' advance.
WORKER_ARGS=(-m celery -A labeling worker -B -s "$VAR_DIR/celerybeat-schedule" -Q default,gpu
             -c "${WORKER_CONCURRENCY:-2}" -n "retag@%h" -l INFO --logfile "$WORKER_LOG")
if [[ "${1:-}" == "worker" ]]; then
    exec "$PYTHON" "${WORKER_ARGS[@]}"
fi

worker_pid=""
server_pid=""

stop() {
    # A second Ctrl-C, or make passing on a TERM, must not cut the cleanup short.
    trap - EXIT
    trap '' INT TERM
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
    fi
    if [[ -n "$worker_pid" ]] && kill -0 "$worker_pid" 2>/dev/null; then
        echo "Stopping the worker (pid $worker_pid)..."
        kill -TERM "$worker_pid" 2>/dev/null || true  # warm shutdown: finish the current task
        for _ in $(seq 1 100); do
            kill -0 "$worker_pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$worker_pid" 2>/dev/null; then
            # Its whole process group (setsid below): the pool processes and a run's training
            # process too. The run is resumed from its checkpoint by the next worker.
            kill -KILL -- "-$worker_pid" 2>/dev/null || kill -KILL "$worker_pid" 2>/dev/null || true
        fi
    fi
    wait 2>/dev/null || true
    rm -f "$VAR_DIR/worker.pid"
    echo "Retag stopped."
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The worker: its own session, so that Ctrl-C reaches it only through stop() (a warm
# shutdown), and its log in var/log/worker.log.
setsid "$PYTHON" "${WORKER_ARGS[@]}" </dev/null >>"$WORKER_LOG" 2>&1 &
worker_pid=$!
echo "$worker_pid" >"$VAR_DIR/worker.pid"

"$PYTHON" manage.py runserver --nostatic --noreload "$HOST:$PORT" </dev/null &
server_pid=$!

# Wait until the server answers (or dies: the port may be taken) and the worker is ready.
server_up=""
for _ in $(seq 1 150); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "The web server exited; is port $PORT taken? Try PORT=8001 make run" >&2
        exit 1
    fi
    if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
        server_up=1
        break
    fi
    sleep 0.2
done
worker_state="starting (see $WORKER_LOG)"
for _ in $(seq 1 150); do
    if ! kill -0 "$worker_pid" 2>/dev/null; then
        echo "The Celery worker exited; see $WORKER_LOG" >&2
        exit 1
    fi
    if grep -q " ready\." "$WORKER_LOG" 2>/dev/null; then
        worker_state="ready (queues default, gpu; log $WORKER_LOG)"
        break
    fi
    sleep 0.2
done

server_state="running"
[[ -n "$server_up" ]] || server_state="still starting"
password_note="password: ${RETAG_DEMO_PASSWORD:-retag-demo}"
[[ -n "${RETAG_DEMO_PASSWORD:-}" ]] && password_note="password: \$RETAG_DEMO_PASSWORD"
cat <<EOF

  Retag is ${server_state} at  http://$HOST:$PORT/
  Log in as   admin      ($password_note)
  also        scientist, annotator (same password)
  API         http://$HOST:$PORT/api/   schema  http://$HOST:$PORT/api/schema/
  Worker      $worker_state

  Press Ctrl-C to stop the server and the worker.

EOF

wait "$server_pid"
