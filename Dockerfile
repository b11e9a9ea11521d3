# cuconv on a CUDA 13 machine: `docker build -t cuconv . && docker run --gpus all cuconv`
# runs `cuconv info` then the default benchmark suite.
FROM nvidia/cuda:13.0.1-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1

# python3 for the package; g++ and boost.context for the CPU emulator (`cuconv check`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip python3-venv g++ libboost-context-dev git \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/cuconv
COPY pyproject.toml README.md ./
COPY src ./src
COPY kernels ./kernels
COPY tests ./tests
COPY bench ./bench

RUN python3 -m pip install ".[cuda13,plot,test]"

CMD ["sh", "-c", "cuconv info && cuconv bench"]
