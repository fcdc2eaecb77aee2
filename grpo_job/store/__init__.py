"""Where a run lives: the run store (local directory or S3) and the checkpoints kept in it.

- `base`: the `RunStore` interface and the local-directory store.
- `s3`: the same interface on S3 or an S3-compatible endpoint, through boto3.
- `checkpoints`: checkpoint upload with a manifest written last, restore with checksums, retention.
- `lease`: one process at a time per run (`lease.json`, renewed; a second start exits 1 naming the holder).
"""

from pathlib import Path

from grpo_job.store.base import LocalStore, RunStore

__all__ = ["LocalStore", "RunStore", "open_store"]


def open_store(uri: str, run_id: str) -> RunStore:
    """The store of run `run_id` under `uri` (a local path, file://… or s3://bucket/prefix)."""
    if uri.startswith("s3://"):
        from grpo_job.store.s3 import S3Store

        return S3Store(f"{uri.rstrip('/')}/{run_id}")
    return LocalStore(Path(uri.removeprefix("file://")).expanduser() / run_id)
