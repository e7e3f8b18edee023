# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY alembic ./alembic
COPY alembic.ini ./
RUN uv sync --frozen --no-dev --no-editable

FROM python:3.11-slim AS runtime
RUN useradd --system --uid 10001 --no-create-home bookedbarber
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/alembic /srv/alembic
COPY --from=build /src/alembic.ini /srv/alembic.ini
WORKDIR /srv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8000 \
    ENVIRONMENT=production DEMO_SEED=false
USER bookedbarber
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2).status != 200)"
# Migrations run as a separate step (a Kubernetes Job or init container):
#   docker run --rm -e DATABASE_URL=... IMAGE bookedbarber db upgrade
ENTRYPOINT ["bookedbarber"]
CMD ["serve", "--no-access-log"]
