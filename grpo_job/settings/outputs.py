"""Where the run's results go: the run store (`store`) and stopping early to save into it (`stop`), the
merged and GGUF exports (`export`) and publishing to the Hugging Face Hub (`hub`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from grpo_job.settings.base import Section, check_s3_uri, check_uri_scheme

_HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")


class StoreSettings(Section):
    uri: str = "./runs"
    """Where runs live: a local directory, `file:///abs/path` or `s3://bucket/prefix`. Each run
    keeps its data, checkpoints, done-markers and artifacts under `<uri>/<run_id>/`."""

    keep_last: int = Field(2, ge=1)
    """Complete checkpoints kept in the store; older ones are deleted only after a newer one is complete."""

    lease_seconds: float = Field(120.0, ge=0.0, le=3600.0)
    """How long the run's lease (`lease.json` in the store) outlives its holder. The process that runs the
    stages holds it and renews it every quarter of this; a second process with the same `run_id` (a second
    `docker run`, a CI re-run, a replacement pod while a lost node's pod still trains) exits 1 naming the
    holder, after watching the lease renewed. A lease left by a process that died (SIGKILL, a lost node) is
    taken over once this long has passed since its last renewal (by the store's clock); one left by a
    process of this machine that is gone, at once.
    0 turns the lease off (a store without conditional writes); else at least 5 s (a store's round trip)."""

    @field_validator("lease_seconds")
    @classmethod
    def _lease_long_enough(cls, v: float) -> float:
        if 0 < v < 5:
            raise ValueError(f"a lease of {v:g} s would be taken over whenever one renewal is a little late (the "
                             "holder renews every quarter of it); set at least 5, or 0 to turn the lease off")
        return v

    @field_validator("uri")
    @classmethod
    def _uri_form(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty store URI: set a directory or s3://bucket/prefix")
        if v.startswith("s3://"):
            return check_s3_uri(v)
        if "://" in v and not v.startswith("file://"):
            raise ValueError(f"unsupported store scheme in {v!r}: use a local path, file:// or s3://")
        return check_uri_scheme(v, "store.uri")


class StopSettings(Section):
    """Stopping early on purpose (SIGTERM, a deadline): save a checkpoint, upload it, exit 75."""

    grace_seconds: float = Field(25.0, gt=0.0, le=3600.0)
    """Seconds from SIGTERM (or from the point the deadline forces a stop) to the process' exit:
    finish the current step, save, upload with the manifest, exit 75. A step that cannot finish in
    time (judged by the last step's length) is interrupted before its optimizer update and the last
    finished step is saved instead. A stage other than `train` gets this long to finish, else it
    runs again on the restart. Keep it a few seconds below the pod's `terminationGracePeriodSeconds`
    (Kubernetes' default: 30 s)."""

    deadline: datetime | None = None
    """Wall-clock time (ISO 8601 with a zone, e.g. `2026-05-01T18:00:00Z`) by which the job must
    have exited, like the end of a spot reservation: training stops in time to save and upload
    before it, then exits 75."""

    max_runtime_seconds: float | None = Field(None, gt=0.0)
    """The same as a deadline, counted from this process' start (one pod's run; the re-exec after
    `train` keeps the original start)."""

    @field_validator("deadline")
    @classmethod
    def _deadline_has_zone(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("the deadline needs a time zone: write e.g. 2026-05-01T18:00:00Z or +02:00")
        return v


class ExportSettings(Section):
    merge: bool = True
    """Merge the LoRA into a 16-bit copy of the base model after training."""

    quantizations: list[Literal["f16", "bf16", "q8_0", "q4_k_m", "q5_k_m", "q6_k"]] = Field(
        default_factory=lambda: ["q4_k_m"]
    )
    """GGUF files to write with llama.cpp's converter and quantizer; empty skips GGUF export. The tools
    are found at `$LLAMA_CPP_DIR` (the image's /opt/llama.cpp) or built once from the pinned
    llama-cpp-python sdist into ~/.cache/grpo-job (needs cmake and a C++ compiler)."""

    verify: bool = True
    """Load each GGUF in llama.cpp (the `gguf` extra: llama-cpp-python) and check it generates, with
    f16/bf16/q8_0 greedy output equal to the merged model's on fixed prompts."""

    allow_unchanged_adapter: bool = False
    """Merge, export and publish an adapter that training never changed (every LoRA update zero: the
    merged model is the base model). By default such a run stops before `merge` with exit 3."""


class HubSettings(Section):
    repo_id: str | None = None
    """Hugging Face Hub model repo to publish to (`owner/name`); None skips publishing."""

    private: bool = True
    """Create the repo private if it does not exist."""

    revision: str = "main"
    """Branch to commit to (created from the default branch if missing)."""

    include_adapter: bool = True
    """Also push the LoRA adapter (under `adapter/`), so it can be loaded on the base model with peft."""

    keep_files: list[str] = Field(default_factory=list)
    """Publishing mirrors the run: files already in the repo that this push does not carry are deleted
    in the same commit (a stale `model.safetensors` beside new shards, old GGUF files). Paths matching
    one of these glob patterns (fnmatch, e.g. `images/*`) are kept; `.gitattributes` always is."""

    @field_validator("repo_id")
    @classmethod
    def _repo_id_form(cls, v: str | None) -> str | None:
        if v is not None and not _HUB_REPO_ID.match(v):
            raise ValueError(f"{v!r} is not a Hub repo id: write owner/name (letters, digits, '-', '_', '.')")
        return v
