# syntax=docker/dockerfile:1.7
# The GPU image of grpo-job: `docker run --gpus all --env-file job.env IMAGE` runs `python entrypoint.py run`.
# See docs/deploy.md for its size, what was left out and how to rebuild the lock.
#
# Base: CUDA 13.0.2 on Ubuntu 24.04 (glibc 2.39, Python 3.12 from the distribution). CUDA 13 because the
# locked torch 2.11.0 wheels from PyPI link the nvidia-*-cu13 libraries; those wheels carry the CUDA runtime,
# so the small "-base" flavour (driver compat only) is enough; the host needs NVIDIA driver >= 580.
# Digest: the multi-arch index digest of the tag, taken from public repositories through the project's
# code search (the linux/amd64 manifest is sha256:605fb0c8acf8674e164d822da8a8521f3a655056e569f0899e72ae940e1fe7dc);
# it could not be re-checked against the registry from the build machine (no Docker, no registry access).
# If NVIDIA re-pushes the tag, `docker buildx imagetools inspect nvidia/cuda:13.0.2-base-ubuntu24.04` gives
# the new one.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04@sha256:2ab6381d970b211fb93853796dc6707eb8a72575a375c422b17cf4d8b2641701

# ---------------------------------------------------------------------------------------------------------
# Builder: llama.cpp's quantizer and converter at the version vendored by llama-cpp-python 0.3.36 (the
# version the export stage was proven with). CPU-only, static, so only the binary is copied out.
FROM ${CUDA_IMAGE} AS llama-cpp
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
ARG PYTHON_VERSION=3.12
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ninja-build \
      "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" "python${PYTHON_VERSION}-dev" \
 && rm -rf /var/lib/apt/lists/*
# The sdist by its immutable PyPI URL and sha256: the build fails if either changes.
ADD --checksum=sha256:832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e \
    https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz \
    /src/llama-cpp-python.tar.gz
WORKDIR /src
RUN tar -xzf llama-cpp-python.tar.gz \
 && mv "llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp" llama.cpp \
 && cmake -S llama.cpp -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
      -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
 && cmake --build build --target llama-quantize -j "$(nproc)" \
 && mkdir -p /opt/llama.cpp/bin \
 && cp build/bin/llama-quantize /opt/llama.cpp/bin/ \
 && cp -r llama.cpp/convert_hf_to_gguf.py llama.cpp/conversion llama.cpp/gguf-py llama.cpp/LICENSE /opt/llama.cpp/
# The llama-cpp-python wheel for verify_gguf, from the same sdist (so the same llama.cpp), for the runtime's
# Python; CPU-only (verify runs on the CPU). The lock installs --only-binary, so the wheel is built here. Its
# one dependency missing from the lock, diskcache, is fetched by version and checked by sha256.
RUN "python${PYTHON_VERSION}" -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir "scikit-build-core[pyproject]==0.11.6" \
 && CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF" \
    /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels /src/llama-cpp-python.tar.gz \
 && /opt/build/bin/pip download --no-cache-dir --no-deps --only-binary=:all: -d /wheels "diskcache==5.6.3" \
 && echo "5e31b2d5fbad117cc363ebaf6b689474db18a1f6438bc82358b024abd4c2ca19  /wheels/diskcache-5.6.3-py3-none-any.whl" \
    | sha256sum -c -

# ---------------------------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG PYTHON_VERSION=3.12
ARG DEBIAN_FRONTEND=noninteractive
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Triton (used by vLLM, Unsloth and torch.compile) compiles small C launchers at run time: it needs gcc and
# Python's headers. libgomp1: llama-quantize's OpenMP runtime. tini forwards SIGTERM to the job and reaps vLLM's worker processes.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" "python${PYTHON_VERSION}-dev" \
      gcc libc6-dev libgomp1 ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && "python${PYTHON_VERSION}" -m venv "$VIRTUAL_ENV"

# The dependency layer depends on the lock alone, so editing grpo_job/ rebuilds in seconds. --require-hashes and
# --no-deps: exactly the locked files are installed, nothing resolved at build time; --only-binary: no
# compiler toolchain runs here. pip's download cache is a BuildKit cache mount, never part of the layer.
COPY requirements/gpu.lock /tmp/gpu.lock
RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/gpu.lock \
 && rm /tmp/gpu.lock

COPY --from=llama-cpp /opt/llama.cpp /opt/llama.cpp
COPY --from=llama-cpp /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && python -c "import llama_cpp; print(llama_cpp.__version__)" | grep -qx 0.3.36
# Both tools must start here, not at the end of a training run: the quantizer (it links libgomp and
# libstdc++ dynamically; it prints its usage and exits 1 without arguments) and the converter with the
# locked torch/numpy/sentencepiece (no GPU needed for --help).
RUN { /opt/llama.cpp/bin/llama-quantize 2>&1 || true; } | grep -q "usage:" \
 && python /opt/llama.cpp/convert_hf_to_gguf.py --help > /dev/null

# Non-root user; every cache that the stack writes lives under /cache (a volume: a PVC or emptyDir on
# Kubernetes, `-v grpo-cache:/cache` with Docker) so compiled kernels and downloads survive restarts.
RUN groupadd --gid 10001 grpo \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/grpo --shell /usr/sbin/nologin grpo \
 && mkdir -p /cache /app \
 && chown grpo:grpo /cache
ENV LLAMA_CPP_DIR=/opt/llama.cpp \
    HF_HOME=/cache/huggingface \
    XDG_CACHE_HOME=/cache \
    TRITON_CACHE_DIR=/cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/cache/torchinductor \
    VLLM_CACHE_ROOT=/cache/vllm \
    CUDA_CACHE_PATH=/cache/nv \
    UNSLOTH_COMPILE_LOCATION=/cache/unsloth_compiled_cache \
    GRPO_WORK_DIR=/cache/work
VOLUME ["/cache"]

WORKDIR /app
COPY --chown=root:root entrypoint.py pyproject.toml ./
COPY --chown=root:root grpo_job/ grpo_job/
COPY --chown=root:root examples/ examples/

USER 10001:10001
LABEL org.opencontainers.image.title="grpo-job" \
      org.opencontainers.image.description="GRPO fine-tuning of a LoRA as a restartable batch job" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "entrypoint.py", "run"]
