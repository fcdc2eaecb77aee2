"""Trainer checkpoints in the run store: published with a manifest written last, found again on
restart, verified, and handed back to the trainer to resume.

Layout in the store: `checkpoints/checkpoint-<step>/<files…>` and, written only after every file
is in place, `checkpoints/checkpoint-<step>/manifest.json` listing each file's size and sha256. A
checkpoint without a valid manifest does not exist as far as resume is concerned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from job.store import RunStore

log = logging.getLogger(__name__)

PREFIX = "checkpoints"
MANIFEST = "manifest.json"
_STEP = re.compile(r"^checkpoint-(\d+)$")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def build_manifest(local_dir: Path, step: int) -> dict[str, Any]:
    files = {}
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(local_dir).as_posix()
        if rel == MANIFEST:
            continue
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return {"step": step, "files": files}


def checkpoint_prefix(step: int) -> str:
    return f"{PREFIX}/checkpoint-{step}"


def publish(store: RunStore, local_dir: Path, step: int, keep_last: int) -> dict[str, Any]:
    """Upload a local trainer checkpoint, then its manifest, then prune old complete checkpoints."""
    manifest = build_manifest(local_dir, step)
    prefix = checkpoint_prefix(step)
    for rel in manifest["files"]:
        store.put_file(local_dir / rel, f"{prefix}/{rel}")
    store.write_text(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1))  # last: makes it count
    prune(store, keep_last)
    return manifest


def steps_in_store(store: RunStore) -> list[int]:
    steps = set()
    for key in store.list(PREFIX + "/"):
        parts = key.split("/")
        if len(parts) >= 2 and (m := _STEP.match(parts[1])):
            steps.add(int(m.group(1)))
    return sorted(steps)


def read_manifest(store: RunStore, step: int) -> dict[str, Any] | None:
    key = f"{checkpoint_prefix(step)}/{MANIFEST}"
    if not store.exists(key):
        return None
    try:
        manifest = json.loads(store.read_text(key))
    except ValueError:
        return None
    if manifest.get("step") != step or not isinstance(manifest.get("files"), dict):
        return None
    return manifest


def complete_steps(store: RunStore) -> list[int]:
    """Steps whose manifest exists and whose objects all exist with the listed sizes, oldest first."""
    out = []
    for step in steps_in_store(store):
        manifest = read_manifest(store, step)
        if manifest is None:
            continue
        prefix = checkpoint_prefix(step)
        present = set(store.list(prefix + "/"))
        if all(f"{prefix}/{rel}" in present and store.size(f"{prefix}/{rel}") == meta["size"]
               for rel, meta in manifest["files"].items()):
            out.append(step)
    return out


def prune(store: RunStore, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints, and incomplete ones older than them."""
    complete = complete_steps(store)
    if len(complete) <= keep_last:
        return
    oldest_kept = complete[-keep_last]
    for step in steps_in_store(store):
        if step < oldest_kept:
            store.delete_prefix(checkpoint_prefix(step))
            log.info("deleted old checkpoint-%d from the store", step)


def restore_latest(store: RunStore, output_dir: Path) -> Path | None:
    """Download the newest complete, checksum-verified checkpoint into `output_dir`; None if none.

    A checkpoint whose download does not match its manifest is skipped with a warning and the
    previous complete one is tried.
    """
    for step in reversed(complete_steps(store)):
        manifest = read_manifest(store, step)
        target = output_dir / f"checkpoint-{step}"
        if target.exists():
            shutil.rmtree(target)
        prefix = checkpoint_prefix(step)
        bad = []
        for rel, meta in manifest["files"].items():
            local = target / rel
            store.get_file(f"{prefix}/{rel}", local)
            if local.stat().st_size != meta["size"] or sha256_file(local) != meta["sha256"]:
                bad.append(rel)
        if bad:
            log.warning("checkpoint-%d in the store is corrupt (%s); trying an older one", step, ", ".join(bad))
            shutil.rmtree(target, ignore_errors=True)
            continue
        log.info("restored checkpoint-%d from the store", step)
        return target
    return None
