# One image for the API and the training worker. CPU torch by default; for CUDA:
#   docker compose build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN pip install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION"

COPY pyproject.toml README.md constraints.txt ./
COPY shared ./shared
COPY services ./services
COPY web ./web
COPY models ./models
# Editable, so the bundled starter model and the viewer are found where they were copied; every
# dependency at the version the tests ran with (constraints.txt: python -m services.stack.pins).
RUN pip install -c constraints.txt -e .

# Named volumes start from these folders, so they belong to the unprivileged user too.
RUN useradd --create-home --uid 1000 unmask && mkdir -p /state/checkpoints /state/files && chown -R unmask /state
USER unmask
ENV UNMASK_STATE_DIR=/state UNMASK_HOST=0.0.0.0 UNMASK_PORT=8000
EXPOSE 8000
CMD ["unmask", "serve"]
