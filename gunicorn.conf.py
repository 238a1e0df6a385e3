"""gunicorn settings for production: `gunicorn -c gunicorn.conf.py wsgi:app`.

Every setting can be changed from the environment. The console keeps nothing in process memory
that another node would need (sessions, tokens, lockouts and OTPs are in PostgreSQL, rate-limit
counters in Redis), so any number of these nodes can run behind one load balancer.
"""
import multiprocessing
import os

bind = os.environ.get("CONSOLE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("CONSOLE_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
threads = int(os.environ.get("CONSOLE_THREADS", "4"))
# argon2id takes ~0.2 s of CPU; a request that needs longer than this is stuck.
timeout = int(os.environ.get("CONSOLE_WORKER_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
max_requests = 2000
max_requests_jitter = 200
# Only the load balancer may set X-Forwarded-Proto and friends (the app's ProxyFix, switched on
# with CONSOLE_TRUSTED_PROXY_HOPS, then reads X-Forwarded-For for the client address).
forwarded_allow_ips = os.environ.get("CONSOLE_FORWARDED_ALLOW_IPS", "127.0.0.1")
# The app writes one JSON line per request itself; gunicorn's own access log would repeat it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("CONSOLE_GUNICORN_LOGLEVEL", "info")
limit_request_line = 4094
limit_request_fields = 60
