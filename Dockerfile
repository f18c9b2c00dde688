# modelmon service image: `docker compose up` builds it from the repository.
#   docker build -t modelmon .
#   docker run --rm modelmon --help
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY modelmon ./modelmon
COPY ingest ./ingest
COPY monitors ./monitors
COPY alerts ./alerts
COPY dashboards ./dashboards
COPY migrations ./migrations
COPY api ./api
COPY demo ./demo
# The service alone: no extras (the evidently extra alone adds ~0.8 GB).
RUN pip install . && useradd --system --home-dir /var/lib/modelmon --create-home modelmon

USER modelmon
WORKDIR /var/lib/modelmon
EXPOSE 9464
# Migrations first (idempotent), then ingest + monitors + HTTP in one process.
ENTRYPOINT ["modelmon"]
CMD ["run", "--host", "0.0.0.0"]
