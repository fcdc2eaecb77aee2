"""llama.cpp's GGUF tools at one pinned version: where they are, and building them once when they are not.

The converter (`convert_hf_to_gguf.py` with its `conversion/` package and `gguf-py`) and `llama-quantize`
come from the llama.cpp tree vendored in the `llama-cpp-python` sdist on PyPI, the same version whose
Python binding the verify stage loads GGUF files with. One directory layout, used by the Docker image
(`LLAMA_CPP_DIR=/opt/llama.cpp`, built there with `python -m grpo_job.artifacts.llamacpp /opt/llama.cpp`) and by the
build cache on machines without the image:

    <dir>/bin/llama-quantize        statically linked, CPU only
    <dir>/convert_hf_to_gguf.py
    <dir>/conversion/               the converter's model classes
    <dir>/gguf-py/                  the gguf package the converter puts first on its sys.path
    <dir>/VERSION                   `llama-cpp-python==<version> llama.cpp build <n>`

Where the job looks: `$LLAMA_CPP_DIR` when set (and then only there), else the cache
`$XDG_CACHE_HOME/grpo-job/llama.cpp-<version>` (~/.cache/...), which `ensure()` builds when missing:
`pip download` of the pinned sdist (no dependencies, no wheel), then cmake builds the one target
(~2.5 min on 2 cores). Nothing is fetched at export time once the tools exist.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
"""The pinned llama-cpp-python release; its sdist vendors the llama.cpp tree the tools are built from."""

ENV_DIR = "LLAMA_CPP_DIR"
_REQUIRED = ("bin/llama-quantize", "convert_hf_to_gguf.py", "conversion/__init__.py", "gguf-py/gguf/__init__.py")

# Only the quantize tool, linked statically so the directory can be copied around (no libllama.so next to
# it), portable x86-64 code (GGML_NATIVE=OFF: an image built on one CPU runs on another), no HTTPS client.
_CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
)


class ToolsUnavailable(RuntimeError):
    """llama.cpp's tools are not installed and cannot be built here."""


@dataclass(frozen=True)
class Tools:
    root: Path

    @property
    def quantize(self) -> Path:
        return self.root / "bin" / "llama-quantize"

    @property
    def converter(self) -> Path:
        return self.root / "convert_hf_to_gguf.py"

    def version(self) -> str:
        path = self.root / "VERSION"
        return path.read_text().strip() if path.is_file() else "unknown (no VERSION file)"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "grpo-job" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


def missing_files(root: Path) -> list[str]:
    return [rel for rel in _REQUIRED if not (root / rel).is_file()]


def find() -> Tools | None:
    """The tools at `$LLAMA_CPP_DIR`, else in the build cache; None when not (completely) there."""
    env = os.environ.get(ENV_DIR)
    root = Path(env) if env else cache_dir()
    return Tools(root) if not missing_files(root) else None


def build_problems() -> list[str]:
    """Why the tools could not be built on this machine (empty when they can)."""
    problems = []
    if not shutil.which("cmake"):
        problems.append("cmake is not installed")
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        problems.append("no C++ compiler (c++, g++ or clang++) is installed")
    if not any(shutil.which(m) for m in ("make", "ninja")):
        problems.append("neither make nor ninja is installed")
    if not _has_pip():
        problems.append("pip is not available to download the pinned llama-cpp-python sdist")
    return problems


def check() -> list[str]:
    """Problems that would stop a GGUF export, for `check` (no build, no download)."""
    env = os.environ.get(ENV_DIR)
    if env:
        gone = missing_files(Path(env))
        if gone:
            return [f"{ENV_DIR}={env} lacks {', '.join(gone)}: point it at a directory built with "
                    f"`python -m grpo_job.artifacts.llamacpp DIR`, or unset it to build the tools into {cache_dir()}"]
        return []
    if find() is not None:
        return []
    problems = build_problems()
    if problems:
        return [f"export.quantizations needs llama.cpp's converter and llama-quantize, which are not in {cache_dir()} "
                f"and cannot be built here ({'; '.join(problems)}): set {ENV_DIR} to a built copy, install the "
                "build tools, or set GRPO_EXPORT__QUANTIZATIONS=[] to skip GGUF export"]
    return []


def ensure() -> Tools:
    """The tools, building them into the cache first if needed (once; concurrent callers wait)."""
    tools = find()
    if tools is not None:
        return tools
    if os.environ.get(ENV_DIR):
        raise ToolsUnavailable(check()[0])
    dest = cache_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits for the first build instead of racing it
        if missing_files(dest):
            build(dest)
    return Tools(dest)


def build(dest: Path, jobs: int | None = None) -> Tools:
    """Download the pinned sdist, build llama-quantize, and lay the tools out in `dest` (replaced atomically)."""
    problems = build_problems()
    if problems:
        raise ToolsUnavailable("cannot build llama.cpp's tools: " + "; ".join(problems))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="llama-cpp-build-", dir=dest.parent) as tmp:
        tmp_path = Path(tmp)
        src, sdist_sha256 = _download_source(tmp_path)
        build_dir = tmp_path / "build"
        log.info("building llama-quantize from llama-cpp-python %s (%d jobs; a few minutes, once)",
                 LLAMA_CPP_PYTHON_VERSION, jobs)
        _run(["cmake", "-S", str(src), "-B", str(build_dir), *_CMAKE_FLAGS], "cmake configure")
        _run(["cmake", "--build", str(build_dir), "--target", "llama-quantize", "-j", str(jobs)], "cmake build")
        staged = tmp_path / "tools"
        (staged / "bin").mkdir(parents=True)
        shutil.copy2(build_dir / "bin" / "llama-quantize", staged / "bin" / "llama-quantize")
        shutil.copy2(src / "convert_hf_to_gguf.py", staged / "convert_hf_to_gguf.py")
        shutil.copytree(src / "conversion", staged / "conversion", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(src / "gguf-py", staged / "gguf-py", ignore=shutil.ignore_patterns("__pycache__", "tests"))
        shutil.copy2(src / "LICENSE", staged / "LICENSE")
        info = _build_info(build_dir, sdist_sha256)
        (staged / "VERSION").write_text(f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} {info}\n")
        if dest.exists():
            shutil.rmtree(dest)
        staged.replace(dest)
    log.info("llama.cpp tools ready in %s", dest)
    return Tools(dest)


def _has_pip() -> bool:
    import importlib.util

    return importlib.util.find_spec("pip") is not None


def _download_source(into: Path) -> tuple[Path, str]:
    """`pip download` the pinned sdist (pip's cache and index settings apply) and unpack its llama.cpp tree."""
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
          "-d", str(into), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"], "pip download of the llama-cpp-python sdist")
    archive = next(into.glob("llama_cpp_python-*.tar.gz"))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
    src = into / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
    if not (src / "CMakeLists.txt").is_file():
        raise ToolsUnavailable(f"the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist has no vendor/llama.cpp tree")
    return src, digest


def _build_info(build_dir: Path, sdist_sha256: str) -> str:
    """The llama.cpp commit cmake baked into the build (common/build-info.cpp) and the sdist's sha256."""
    info = build_dir / "common" / "build-info.cpp"
    text = info.read_text() if info.is_file() else ""
    match = re.search(r'LLAMA_COMMIT = "([^"]*)"', text)
    return f"llama.cpp commit {match.group(1) if match else 'unknown'} (sdist sha256 {sdist_sha256})"


def _run(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-30:])
        raise ToolsUnavailable(f"{what} failed (exit {r.returncode}):\n{tail}")


def main(argv: list[str] | None = None) -> int:
    """`python -m grpo_job.artifacts.llamacpp DIR`: build the tools into DIR (the Docker image does this at build time)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m grpo_job.artifacts.llamacpp", description=main.__doc__)
    p.add_argument("dest", nargs="?", type=Path, default=None, help=f"target directory (default: {cache_dir()})")
    p.add_argument("-j", "--jobs", type=int, default=None, help="parallel compile jobs (default: all cores)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tools = build(args.dest or cache_dir(), args.jobs)
    print(f"{tools.root}: {tools.version()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
