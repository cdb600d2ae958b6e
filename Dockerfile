FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends openssh-client && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/agentruns
COPY pyproject.toml README.md ./
COPY app app
COPY workers workers
COPY drivers drivers
COPY providers providers
COPY agentruns agentruns
COPY migrations migrations
RUN pip install --no-cache-dir .
RUN useradd --system --create-home agentruns
USER agentruns
