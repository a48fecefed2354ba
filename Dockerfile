# CPU image: installs SpineForge the way the README does and runs the demo build by default.
# Outside machines with a local CPU torch wheel, the PyTorch CPU index supplies torch 2.13.0+cpu.
FROM python:3.11-slim
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} PREFECT_HOME=/tmp/prefect
WORKDIR /opt/spineforge
COPY . .
RUN pip install torch==2.13.0 torchvision==0.28.0 && pip install -e .
VOLUME ["/data"]
CMD ["spineforge", "demo", "--out", "/data"]
