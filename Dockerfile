# The cloneshelf web app and worker (one image; compose picks the command).
# BASE_IMAGE: python:3.12-slim, unless a build is told otherwise (tests/test_compose.py builds
# on a local stand-in, on machines that reach no registry: scripts/standin_images.sh).
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CLONES_DATA_DIR=/data

# uid/gid 1000: clone containers run as the worker's own uid:gid, so the worker can delete
# every file git writes into the shared volume. A home of its own (/home/app), writable, apart
# from the code in /app (root's): gunicorn 25.1+ makes its control socket in ~/.gunicorn.
# OpenSSH's client: the worker reads an SSH URL's branches and tags with it (clones.pipeline.refs).
# A base that has it already (the tests' stand-in, which has no network) installs nothing.
RUN command -v ssh >/dev/null || { apt-get update \
        && apt-get install -y --no-install-recommends openssh-client \
        && rm -rf /var/lib/apt/lists/*; }
RUN groupadd --gid 1000 app && useradd --uid 1000 --gid app --home-dir /home/app --create-home app \
    && mkdir -p /app /data && chown app:app /data

WORKDIR /app
COPY pyproject.toml manage.py ./
COPY project ./project
COPY clones ./clones
COPY templates ./templates
RUN pip install -e . \
    && DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput

USER app
VOLUME ["/data"]
EXPOSE 8000
# Threads that stream downloads as slowly as their clients read them: project/gunicorn.conf.py.
CMD ["gunicorn", "--config", "project/gunicorn.conf.py", "project.wsgi", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
