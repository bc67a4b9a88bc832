"""How gunicorn serves the site, however it is run: `./run`, the image's command (which compose
runs) and the tests all start `gunicorn --config project/gunicorn.conf.py project.wsgi` and add
only where to listen. GUNICORN_CMD_ARGS overrides any of it (gunicorn reads it after this file).

Threads, not gunicorn's default sync workers. A download is streamed for as long as its client
takes to read it (64 MiB at 150 KB/s: seven minutes). A sync worker serves nothing else
meanwhile, and the arbiter kills it once it has sent no heartbeat for `timeout` (30 s), cutting
the download short after its 200 and Content-Length have gone out. A gthread worker sends its
heartbeat from its main loop, whatever its threads are doing: a download is never killed, and
while one thread sends it, the others serve pages.
"""

import os


def _at_least_one(name: str, default: int) -> int:
    value = os.environ.get(name) or str(default)
    if not value.isdecimal() or int(value) < 1:
        raise ValueError(f"{name}={value!r} is not a whole number of at least 1")
    return int(value)


worker_class = "gthread"
workers = _at_least_one("CLONESHELF_WEB_WORKERS", 2)
# Requests one process serves at once; a download holds its thread until its last byte. A thread
# keeps its database connection (CONN_MAX_AGE), so workers x threads stays below PostgreSQL's
# max_connections (100 by default) with the worker's connections besides.
threads = _at_least_one("CLONESHELF_WEB_THREADS", 32)
# A process takes no more connections than it has threads: the next waits in the listen queue
# for whichever process frees a thread first, never behind the downloads of a full one.
worker_connections = threads
# One request a connection, as with the sync workers: a kept-alive connection would hold one of
# those places while idle.
keepalive = 0
