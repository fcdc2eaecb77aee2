"""What every section of the settings shares: the `Section` base model and the S3 URI check.

Sections are pure: validating them reads the values alone (no files, packages, network or GPU), so the
same settings validate on a CI runner without the ML stack and in the pod. What depends on the machine
that runs the job is checked by `grpo_job.settings.environment`, in `check` and `run` only.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class Section(BaseModel):
    # A typo in a YAML key or an env var must fail, not be silently ignored; `inf`, `nan` and 1e400 (inf to
    # a float) are no setting's value, and would reach the trainer's arithmetic as they are.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


def _percent(value: Any) -> Any:
    """`"10%"` -> 0.1: a share may be written as a percentage; anything else is left to the float check."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            return value
    return value


Share = Annotated[float, BeforeValidator(_percent)]
# numpy's and torch's seeds: transformers' set_seed refuses others mid-run (trial: seed -1 crashed the train stage)
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
"""A share of something (0.05, or written `5%`): its range is the field's own constraint."""


# `scheme:/...`: a URI, or one with a slash missing (`s3:/bucket`), which would otherwise be read as a
# local path and quietly write the checkpoints into `./s3:/bucket`. Two letters at least: `C:/` is a drive.
_URI_LIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/")
# without any slash (`s3:bucket/x`): only schemes of storage, since a local name may hold a colon (`runs:2`)
_KNOWN_SCHEME = re.compile(r"^(s3|file|gs|gcs|az|abfs|abfss|hf|https?):", re.IGNORECASE)


def check_uri_scheme(value: str, setting: str) -> str:
    """Reject a value that looks like a URI (`scheme:/...`) but is not `s3://...` or `file://...`:
    a misspelt scheme or a missing slash, naming what to write instead."""
    m = _URI_LIKE.match(value) or _KNOWN_SCHEME.match(value)
    if m and not value.startswith(("s3://", "file://")):
        scheme = m.group(1)
        rest = value[m.end():].lstrip("/")
        fix = {"s3": f"write s3://{rest}", "file": f"write file:///{rest}"}.get(
            scheme.lower(), "use a local path, file:///abs/path or s3://bucket/prefix")
        raise ValueError(f"{value!r} starts like a URI ({value[:m.end()]}) but not as s3:// or file://, the schemes "
                         f"{setting} takes: {fix}")
    return value


def check_s3_uri(uri: str) -> str:
    """Reject `s3://`, `s3:///x` and bucket names S3 would refuse, naming the rule broken."""
    rest = uri[len("s3://") :]
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise ValueError(f"{uri!r} has no bucket: write s3://BUCKET[/PREFIX]")
    if not _S3_BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(
            f"{bucket!r} is not a valid S3 bucket name (3-63 characters: lowercase letters, digits, '.', '-')"
        )
    return uri
