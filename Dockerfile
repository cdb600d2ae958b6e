FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends openssh-client && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/agentruns
COPY pyproject.toml requirements.lock README.md ./
COPY app app
COPY core core
COPY workers workers
COPY drivers drivers
COPY providers providers
COPY agentruns agentruns
COPY migrations migrations
RUN pip install --no-cache-dir -c requirements.lock '.[server,mcp]'
RUN useradd --system --create-home agentruns
USER agentruns
