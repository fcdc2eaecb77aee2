"""The run store: where a run's data, checkpoints, done-markers and artifacts live.

`open_store(uri, run_id)` returns a store rooted at `<uri>/<run_id>/`. Keys are `/`-separated paths
relative to that root. The local-directory store is the embedded default; an S3 store implements
the same interface. Writes of single objects are atomic (a reader sees the old object or the new
one, never half of one), which is what done-markers and checkpoint manifests rely on.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, NamedTuple

from grpo_job.errors import SettingsError


class Tagged(NamedTuple):
    """An object read with its version, for a compare-and-swap (`RunStore.read_tagged`)."""

    data: bytes
    tag: str
    """The version tag `write_if` compares (S3: the ETag)."""
    age: float | None = None
    """Seconds since it was written, by the store's own clock (S3: the server's `Date` less `LastModified`;
    a local store: its file's modification time), so no two machines' clocks are compared; None when the
    store cannot tell. A lower bound: rounded down to the store's resolution."""


class RunStore(ABC):
    """A run's storage, addressed by relative keys."""

    uri: str

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write one object atomically."""

    @abstractmethod
    def put_file(self, local: Path, key: str) -> None: ...

    @abstractmethod
    def get_file(self, key: str, local: Path) -> None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key under `prefix` (recursive), sorted."""

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    def check_reachable(self) -> None:
        """Raise SettingsError when the store cannot be used (called by `check` and before `run`)."""

    @abstractmethod
    def read_tagged(self, key: str) -> Tagged | None:
        """The object at `key` with its version tag and age, or None when there is none."""

    @abstractmethod
    def write_if(self, key: str, data: bytes, tag: str | None) -> str | None:
        """Write `key` only while its version tag is `tag` (None: only while there is no such object), as
        one compare-and-swap; the new tag, or None when the object had changed (nothing written)."""

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode())

    def read_json(self, key: str) -> Any:
        """The JSON object at `key` (a done-marker, the saved settings). Raises SettingsError (exit 2) naming
        the object when it is not JSON: the job writes them whole (atomically), so one that does not parse
        was cut or edited outside the job, and no retry reads it differently."""
        text = self.read_text(key)
        try:
            return json.loads(text)
        except ValueError as e:
            raise SettingsError(
                f"{self.uri.rstrip('/')}/{key} in the run's store is not valid JSON ({e}): it was cut short or edited "
                "outside the job. Delete it and the run redoes what it recorded (a stage marker: that stage; "
                "settings.json: the check of changed settings), or set GRPO_RUN_ID to start another run") from None

    def put_dir(self, local_dir: Path, prefix: str) -> list[str]:
        """Upload every file under `local_dir` to `prefix/…`; returns the keys written."""
        keys = []
        for path in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
            key = f"{prefix.rstrip('/')}/{path.relative_to(local_dir).as_posix()}"
            self.put_file(path, key)
            keys.append(key)
        return keys

    def get_dir(self, prefix: str, local_dir: Path) -> list[Path]:
        """Download every object under `prefix/` into `local_dir`, keeping relative paths."""
        prefix = prefix.rstrip("/") + "/"
        out = []
        for key in self.list(prefix):
            target = Path(local_dir) / key[len(prefix) :]
            self.get_file(key, target)
            out.append(target)
        return out


class LocalStore(RunStore):
    """A directory on a local or mounted file system."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"key {key!r} escapes the store root")
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # not mkstemp: its files are 0600, and a marker or manifest must be readable as every other file of
        # the store is (the umask decides), e.g. by a sidecar or an operator with another uid
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, local: Path, key: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        shutil.copyfile(local, tmp)
        os.replace(tmp, path)

    def get_file(self, key: str, local: Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), local)

    def list(self, prefix: str = "") -> list[str]:
        # S3 semantics: a prefix is a string prefix of the key, not necessarily a folder.
        if not self.root.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and not Path(k).name.startswith("."))

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()

    def read_tagged(self, key: str) -> Tagged | None:
        try:
            with open(self._path(key), "rb") as f:
                data, written = f.read(), os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None
        return Tagged(data, hashlib.sha256(data).hexdigest(), max(0.0, time.time() - written))

    def write_if(self, key: str, data: bytes, tag: str | None) -> str | None:
        # the compare and the write under one lock file beside the object (hidden: `list` skips it); the
        # write itself stays atomic, so a plain reader never sees half of it
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read_tagged(key)
            if (current.tag if current else None) != tag:
                return None
            self.write_bytes(key, data)
            return hashlib.sha256(data).hexdigest()

    def check_reachable(self) -> None:
        """SettingsError unless the store folder can be written, or created: its nearest existing folder is
        checked, and nothing is made (`check` leaves no empty run folder behind)."""
        there = self.root
        while not there.exists() and there != there.parent:
            there = there.parent
        if not there.is_dir():
            raise SettingsError(f"store {self.uri!r} cannot be created: {str(there)!r} is a file, not a folder; "
                                "set GRPO_STORE__URI")
        if not os.access(there, os.W_OK | os.X_OK):
            what = "is not writable" if there == self.root else f"cannot be created: {str(there)!r} is not writable"
            raise SettingsError(f"store {self.uri!r} {what}; set GRPO_STORE__URI to a writable place")
