"""Trainer checkpoints in the run store: published with a manifest written last, found again on
restart, verified, and handed back to the trainer to resume.

Layout in the store: `checkpoints/checkpoint-<step>/<files…>` and, written only after every file
is in place, `checkpoints/checkpoint-<step>/manifest.json` listing each file's size and sha256. A
checkpoint without a valid manifest does not exist as far as resume is concerned.

`BackgroundPublisher` does the publishing in a worker thread while training goes on: the trainer's
checkpoint folder is snapshotted (hard links) before `on_save` returns, so the trainer may delete
it (`save_total_limit`) while the upload still reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo_job.store.base import RunStore

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


# A checkpoint of a small LoRA uploads in seconds (docs/benchmarks.md: 113 MiB in 0.2-1.5 s); one that waits this
# long means the store is not answering
UPLOAD_STALL_SECONDS = 180.0


class UploadFailed(RuntimeError):
    """A checkpoint could not be uploaded even after retrying: the job must fail, not pretend."""


def publish(store: RunStore, local_dir: Path, step: int, keep_last: int) -> dict[str, Any]:
    """Upload a local trainer checkpoint, then its manifest, then prune old complete checkpoints.

    The manifest is written only after every file was uploaded and is listed in the store with its
    size; any failure before that raises and leaves no manifest (so the checkpoint does not count).
    """
    if (local_dir / MANIFEST).exists():
        raise ValueError(f"{local_dir} already holds a {MANIFEST}; it must be written last, by publish()")
    manifest = build_manifest(local_dir, step)
    prefix = checkpoint_prefix(step)
    store.put_dir(local_dir, prefix)  # S3: every file and part concurrently, through the transfer manager
    present = set(store.list(prefix + "/"))
    missing = [rel for rel, meta in manifest["files"].items()
               if f"{prefix}/{rel}" not in present or store.size(f"{prefix}/{rel}") != meta["size"]]
    if missing:
        raise UploadFailed(f"checkpoint-{step}: {', '.join(missing)} missing or short in the store after upload")
    store.write_text(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1))  # last: makes it count
    prune(store, keep_last)
    return manifest


def snapshot(src: Path, dest: Path) -> Path:
    """A copy of folder `src` at `dest` made of hard links (instant, no extra space), or real copies
    where links are impossible (another file system). Deleting `src` afterwards leaves it intact."""
    if dest.exists():
        shutil.rmtree(dest)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    return dest


@dataclass
class _Job:
    step: int
    folder: Path  # the snapshot
    extras: dict[str, Path] = field(default_factory=dict)  # store key -> local copy, uploaded after the manifest


class BackgroundPublisher:
    """Publishes checkpoints from one worker thread, oldest first, while training continues.

    - `submit` snapshots the checkpoint and returns at once; the worker builds the manifest,
      uploads (the store's own retries apply to every request), writes the manifest last, prunes.
    - A checkpoint whose upload fails is uploaded again from scratch `attempts - 1` more times;
      if it still fails the publisher is broken: `raise_if_failed` (called by the training loop
      at each step) and `wait` raise `UploadFailed` in the caller's thread, and later
      checkpoints are not uploaded (their steps would sit on top of a lost one).
    - The worker is not a daemon thread: the interpreter cannot exit while an upload is running.
    - A checkpoint still waiting for its upload after `stall_seconds` is warned of, once (`raise_if_failed` looks):
      a store that hangs without failing otherwise went unseen while training ran on (trial: 6 minutes).
    """

    def __init__(self, store: RunStore, keep_last: int, staging_dir: Path, attempts: int = 2,
                 stall_seconds: float = UPLOAD_STALL_SECONDS):
        self.store, self.keep_last, self.attempts, self.stall_seconds = store, keep_last, attempts, stall_seconds
        self.staging_dir = Path(staging_dir)
        self.published: list[int] = []
        self.upload_seconds: list[float] = []
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._failure: BaseException | None = None
        self._pending = 0
        self._queued_at: dict[int, float] = {}  # step -> when submitted, until its upload ends
        self._stall_warned: set[int] = set()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="checkpoint-publisher", daemon=False)
        self._thread.start()

    # ------------------------------------------------------------ caller side (training thread)
    def submit(self, local_dir: Path, step: int, extras: dict[str, Path] | None = None) -> None:
        self.raise_if_failed()
        t0 = time.monotonic()
        folder = snapshot(Path(local_dir), self.staging_dir / f"checkpoint-{step}")
        copies = {}
        for key, path in (extras or {}).items():
            if path.exists():  # extras (metrics.jsonl) are appended to in place: copy, do not link
                copies[key] = self.staging_dir / f"extra-{step}-{Path(key).name}"
                shutil.copyfile(path, copies[key])
        with self._cond:
            self._pending += 1
            self._queued_at[step] = time.monotonic()
        self._queue.put(_Job(step, folder, copies))
        log.info("checkpoint-%d queued for upload", step,
                 extra={"step": step, "snapshot_seconds": round(time.monotonic() - t0, 4)})

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    def unsaved(self) -> list[int]:
        """The steps submitted whose upload has not ended: saved here, not (yet) in the store."""
        with self._cond:
            return sorted(self._queued_at)

    def raise_if_failed(self) -> None:
        """Raise UploadFailed if a checkpoint could not be published; warn of one waiting `stall_seconds`."""
        if self._failure is not None:
            raise UploadFailed(str(self._failure)) from self._failure
        self._warn_if_stalled()

    def _warn_if_stalled(self) -> None:
        with self._cond:
            waiting = {step: time.monotonic() - t for step, t in self._queued_at.items()}
        stalled = [step for step, seconds in waiting.items() if seconds >= self.stall_seconds]
        if stalled and (oldest := min(stalled)) not in self._stall_warned:
            self._stall_warned.add(oldest)
            log.warning("checkpoint-%d has waited %.0f s for its upload to %s (%d checkpoint(s) waiting: %s): the store "
                        "is slow or not answering. Training goes on; until these uploads end, a stop or a lost pod "
                        "resumes from an older checkpoint", oldest, waiting[oldest], self.store.uri, len(waiting),
                        ", ".join(map(str, sorted(waiting))), extra={"step": oldest})

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every submitted checkpoint is published (True) or `timeout` passes (False).
        Raises UploadFailed if one could not be published."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if waiting := self.unsaved():  # trial: minutes of silence here while a frozen store held the uploads
            log.info("waiting for the upload of checkpoint(s) %s to %s", ", ".join(map(str, waiting)), self.store.uri)
        while True:
            with self._cond:
                if not self._pending or self._failure is not None:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(10.0 if left is None else min(left, 10.0))
            self._warn_if_stalled()
        self.raise_if_failed()
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Wait for pending uploads, then stop the worker. Returns False when `timeout` ran out."""
        try:
            done = self.wait(timeout)
        finally:
            self._queue.put(None)
        if done:
            self._thread.join()
        return done

    # ------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._failure is None:
                try:
                    self._publish(job)
                except BaseException as e:  # handed to the training thread, which raises it
                    self._failure = e
                    log.error("checkpoint-%d could not be uploaded: %s: %s", job.step, type(e).__name__, e,
                              extra={"step": job.step})
            shutil.rmtree(job.folder, ignore_errors=True)
            for path in job.extras.values():
                path.unlink(missing_ok=True)
            with self._cond:
                self._pending -= 1
                self._queued_at.pop(job.step, None)
                self._cond.notify_all()

    def _publish(self, job: _Job) -> None:
        t0 = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                manifest = publish(self.store, job.folder, job.step, self.keep_last)
                break
            except Exception as e:
                if attempt == self.attempts:
                    raise UploadFailed(
                        f"checkpoint-{job.step} failed to upload {attempt} times to {self.store.uri}; "
                        f"last error: {type(e).__name__}: {e}"
                    ) from e
                log.warning("checkpoint-%d upload attempt %d failed (%s: %s); uploading it again", job.step,
                            attempt, type(e).__name__, e, extra={"step": job.step})
        for key, path in job.extras.items():
            self.store.put_file(path, key)
        seconds = time.monotonic() - t0
        self.upload_seconds.append(seconds)
        self.published.append(job.step)
        size = sum(m["size"] for m in manifest["files"].values())
        log.info("checkpoint-%d saved to the store (%d files, %.1f MiB, %.1f s)", job.step, len(manifest["files"]),
                 size / (1 << 20), seconds,
                 extra={"step": job.step, "upload": {"bytes": size, "seconds": round(seconds, 3)}})


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


# ---------------------------------------------------------------- resume check
def tensor_digest(tensors: dict[str, Any]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of each tensor, by sorted name."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def optimizer_tensors(state_dict: dict[str, Any]) -> dict[str, Any]:
    """The tensors of an optimizer state dict, named `<param index>.<slot>` (exp_avg, step…)."""
    import torch

    return {f"{pid}.{slot}": v for pid, slots in state_dict["state"].items() for slot, v in slots.items()
            if isinstance(v, torch.Tensor)}


def _tensor_differences(what: str, saved: dict, loaded: dict) -> list[str]:
    """What differs between saved and loaded tensors of the same names (empty when equal)."""
    import torch

    if set(saved) != set(loaded):
        return [f"{what} tensor names differ ({len(saved)} saved, {len(loaded)} loaded)"]
    differ = [k for k in saved if not torch.equal(saved[k], loaded[k].detach().cpu())]
    return [f"{len(differ)} {what} tensors differ, e.g. {differ[0]}"] if differ else []


def verify_resumed(checkpoint: Path, global_step: int, model: Any, optimizer: Any, lr_scheduler: Any,
                   tensors: bool = True) -> dict[str, Any]:
    """Check that what the trainer loaded equals the checkpoint's files: step, scheduler position and,
    with `tensors` (not for sharded training, where each process holds a slice), LoRA weights and
    optimizer state. Raises RuntimeError naming what differs; returns digests."""
    import torch

    problems = []
    saved_step = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
    if global_step != saved_step:
        problems.append(f"trainer step {global_step} != saved {saved_step}")

    facts: dict[str, Any] = {"step": global_step}
    if tensors:
        from peft import get_peft_model_state_dict
        from safetensors.torch import load_file

        saved_lora = load_file(checkpoint / "adapter_model.safetensors")
        loaded_lora = get_peft_model_state_dict(model)
        problems += _tensor_differences("LoRA", saved_lora, loaded_lora)

        saved_opt = optimizer_tensors(torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True))
        loaded_opt = optimizer_tensors(optimizer.state_dict())
        problems += _tensor_differences("optimizer", saved_opt, loaded_opt)
        facts.update(lora_sha256=tensor_digest(loaded_lora), optimizer_sha256=tensor_digest(loaded_opt),
                     lora_tensors=len(loaded_lora), optimizer_tensors=len(loaded_opt))

    # the scheduler file is the Trainer's own pickle; it was checksum-verified against the manifest
    saved_sched = torch.load(checkpoint / "scheduler.pt", map_location="cpu", weights_only=False)
    if saved_sched.get("last_epoch") != lr_scheduler.state_dict().get("last_epoch"):
        problems.append(f"scheduler position {lr_scheduler.state_dict().get('last_epoch')} != saved "
                        f"{saved_sched.get('last_epoch')}")
    if problems:
        raise RuntimeError(f"the state resumed from {checkpoint.name} is not the saved one: " + "; ".join(problems))
    facts["scheduler_last_epoch"] = saved_sched.get("last_epoch")
    return facts
