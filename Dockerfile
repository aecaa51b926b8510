# backprop-jobs: one image for every role (api, worker, beat, migrate); compose picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY api ./api
COPY worker ./worker
COPY store ./store
COPY backprop ./backprop
COPY migrations ./migrations
RUN pip install . \
    && useradd --create-home --uid 10001 backprop \
    && mkdir -p /var/lib/backprop && chown backprop /var/lib/backprop
ENV VAR_DIR=/var/lib/backprop
USER backprop

EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "4", \
     "--worker-class", "api.gunicorn_worker.ProblemWorker", "--threads", "32", \
     "--timeout", "120", "api:create_app()"]
