# reconciler as a container: the same install steps as the README's first command.
FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/reconciler
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN pip install --no-cache-dir . \
    && useradd --create-home reconciler
USER reconciler
WORKDIR /work
ENTRYPOINT ["reconciler"]
CMD ["--help"]
