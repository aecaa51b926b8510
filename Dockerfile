# backprop-jobs: one image for every role (api, worker, control, beat, migrate); compose picks
# the command. The builder stage turns the project and its dependencies into wheels; the final
# stage installs only those wheels, so compilers, build backends and sources stay behind.
#   docker build .                              # the image of every role
#   docker build --build-arg EXTRAS=monitor .   # with Flower (the compose profile `monitor`)
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# the whole context: .dockerignore leaves out tests, docs and local state, never a package
COPY . .
ARG EXTRAS=""
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAR_DIR=/var/lib/backprop

RUN useradd --create-home --uid 10001 backprop \
    && mkdir -p /var/lib/backprop && chown backprop /var/lib/backprop
ARG EXTRAS=""
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "backprop-jobs${EXTRAS:+[$EXTRAS]}"

# the migrate service runs `alembic upgrade head` here: alembic.ini finds migrations/ beside it
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
USER backprop

EXPOSE 8000
# for the default command, the API; compose gives each role its own check
HEALTHCHECK --interval=10s --timeout=5s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=3)"]
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "4", \
     "--worker-class", "api.gunicorn_worker.ProblemWorker", "--threads", "32", \
     "--timeout", "120", "--no-control-socket", "--config", "python:api.gunicorn_conf", \
     "web:create_app()"]
