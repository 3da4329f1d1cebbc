"""gunicorn's settings for Retag's web server in production (README, Production, Web):

    gunicorn -c gunicorn.conf.py

Threaded workers (``gthread``): a request spends most of its time waiting on PostgreSQL,
so a few processes with several threads each serve more than one process per request,
in less memory. Every thread keeps its own database connection (``DB_CONN_MAX_AGE``), so
PostgreSQL's ``max_connections`` must exceed ``WEB_WORKERS`` x ``WEB_THREADS`` on every
web machine, plus the Celery workers. The values come from the environment like the
rest of the settings; a command-line option still wins over this file.
"""
import os

wsgi_app = "labeling.wsgi:application"
bind = os.environ.get("WEB_BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS") or 2 * (os.cpu_count() or 1) + 1)
threads = int(os.environ.get("WEB_THREADS", "4"))
# A request that takes longer is stuck (the slow work runs in Celery): its worker is
# replaced. Behind a proxy, keep its read timeout above this.
timeout = int(os.environ.get("WEB_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then, staggered, so that memory growth stays bounded.
max_requests = int(os.environ.get("WEB_MAX_REQUESTS", "5000"))
max_requests_jitter = max_requests // 10
# The reverse proxy's address: only its X-Forwarded-* headers are believed.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = os.environ.get("WEB_ACCESS_LOG", "-") or None  # empty: no access log
errorlog = "-"
loglevel = os.environ.get("WEB_LOG_LEVEL", "info")
