"""The run store on S3 or any S3-compatible endpoint (MinIO, R2, Ceph), through boto3.

Everything that boto3 already does is left to boto3:
- credentials: the standard chain (env, shared profile, IRSA / web identity, instance metadata);
- the endpoint: boto3's own `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` variables (or the profile);
- retries: botocore's `standard` mode (throttling such as 503 SlowDown, 5xx, dropped connections,
  timeouts), `AWS_RETRY_MODE` / `AWS_MAX_ATTEMPTS` when set take precedence over our defaults;
- multipart, concurrent transfers: boto3's transfer manager (`TransferConfig`).

A single PUT (and a completed multipart upload) is atomic on S3: readers see the old object or the
new one, never half of one. So a done-marker or a checkpoint manifest written with `write_bytes` is
either there whole or not at all.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from grpo_job.errors import JobError, SettingsError
from grpo_job.store.base import RunStore, Tagged

MiB = 1 << 20
# Multipart above 16 MiB in 16 MiB parts, 8 parts/files in flight: a 3B LoRA's optimizer state
# (hundreds of MiB) goes up in parallel parts; each part is retried on its own by botocore.
MULTIPART_CHUNK = 16 * MiB
MAX_CONCURRENCY = 8
MAX_ATTEMPTS = 8  # botocore counts the first try: 1 + 7 retries with exponential back-off


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> ('bucket', 'a/b')."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key.strip("/")


def _client_config(max_attempts: int | None, connect_timeout: float, read_timeout: float) -> Any:
    from botocore.config import Config

    kwargs: dict[str, Any] = {"connect_timeout": connect_timeout, "read_timeout": read_timeout,
                              "max_pool_connections": MAX_CONCURRENCY * 2,
                              # which process of a multi-process run sent a request, in the S3 access logs
                              "user_agent_extra": f"grpo-job/rank-{os.environ.get('RANK', '0')}"}
    # The user's own AWS_RETRY_MODE / AWS_MAX_ATTEMPTS win over our defaults (a Config passed to the
    # client would otherwise override them).
    if not (os.environ.get("AWS_RETRY_MODE") or os.environ.get("AWS_MAX_ATTEMPTS")) or max_attempts is not None:
        kwargs["retries"] = {"mode": "standard", "max_attempts": max_attempts or MAX_ATTEMPTS}
    return Config(**kwargs)


def make_client(max_attempts: int | None = None, connect_timeout: float = 10, read_timeout: float = 60) -> Any:
    """An S3 client from boto3's standard credential chain and endpoint resolution."""
    import boto3

    return boto3.session.Session().client("s3", config=_client_config(max_attempts, connect_timeout, read_timeout))


def transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_CHUNK, multipart_chunksize=MULTIPART_CHUNK,
                          max_concurrency=MAX_CONCURRENCY, use_threads=True)


def _error_code(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def describe_error(err: Exception, uri: str, endpoint: str | None) -> str:
    """What went wrong reaching `uri`, and what to set (`answer_error` picks the exit code)."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    where = f"{uri} (endpoint {endpoint or 'AWS default'})"
    if isinstance(err, NoCredentialsError | PartialCredentialsError):
        return (f"no usable AWS credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or a web identity (IRSA) for the pod")
    if isinstance(err, EndpointConnectionError):
        return (f"cannot reach the S3 endpoint for {where}: {err}; check the network, or set AWS_ENDPOINT_URL_S3 "
                "(or AWS_ENDPOINT_URL) to your S3-compatible endpoint")
    if isinstance(err, ClientError):
        code = _error_code(err)
        if code in ("404", "NoSuchBucket"):
            return f"bucket of {where} does not exist: create it or fix GRPO_STORE__URI / the data path"
        if code in ("NoSuchKey", "NotFound"):
            return f"{where} does not exist"
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return (f"access denied to {where} ({code}): check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE, "
                    "IRSA role) and the bucket policy")
        return f"S3 refused {where}: {code or err}"
    return f"cannot use {where}: {type(err).__name__}: {err}; check AWS_ENDPOINT_URL_S3 and the network"


def answer_error(err: Exception, uri: str, endpoint: str | None, prefix: str = "") -> JobError:
    """The job's error for `err` reaching `uri`: a SettingsError (exit 2: fix it) when S3 answered no (no bucket, no
    object, no access, no credentials); a JobError (exit 1: a Kubernetes Job retries) when it did not answer, since an
    outage and a wrong endpoint look alike from here (trial: exit 2 failed a Job for good on a store outage while its
    replacement pod started)."""
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    said = prefix + describe_error(err, uri, endpoint)
    if isinstance(err, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | ConnectionClosedError):
        return JobError(f"{said} (exit 1: a retry may find it answering; a wrong endpoint fails the same way each time)")
    return SettingsError(said)


def object_size(uri: str) -> int:
    """Size of the object at `uri`; SettingsError (exit 2) when it is missing, JobError (exit 1) when S3 does not
    answer (`answer_error`)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_uri(uri)
    client = make_client(max_attempts=2, connect_timeout=5, read_timeout=20)
    try:
        return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except ClientError as e:
        if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
            # HEAD cannot tell a missing bucket from a missing key: say which.
            try:
                client.head_bucket(Bucket=bucket)
            except (ClientError, BotoCoreError) as e2:
                raise answer_error(e2, f"s3://{bucket}", client.meta.endpoint_url) from None
            raise SettingsError(f"data object {uri} does not exist (endpoint {client.meta.endpoint_url}); "
                                "fix GRPO_DATA__PATH") from None
        raise SettingsError(describe_error(e, uri, client.meta.endpoint_url)) from None
    except BotoCoreError as e:
        raise answer_error(e, uri, client.meta.endpoint_url) from None


def download_object(uri: str, dest: Path) -> None:
    """Download one object (a dataset file) to `dest`, atomically; the error `answer_error` gives when it cannot."""
    from botocore.exceptions import BotoCoreError, ClientError

    object_size(uri)  # a clear message for a missing object / bucket / endpoint first
    bucket, key = split_uri(uri)
    client = make_client()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.partial")  # its own: a shared cache has other writers
    try:
        client.download_file(bucket, key, str(tmp), Config=transfer_config())
    except (ClientError, BotoCoreError) as e:
        tmp.unlink(missing_ok=True)
        raise answer_error(e, uri, client.meta.endpoint_url) from None
    os.replace(tmp, dest)


class S3Store(RunStore):
    """A run's store under `s3://bucket/prefix/<run_id>/`."""

    def __init__(self, uri: str, max_attempts: int | None = None):
        self.uri = uri.rstrip("/")
        self.bucket, self.root = split_uri(self.uri)
        self.client = make_client(max_attempts)

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    def _key(self, key: str) -> str:
        key = key.lstrip("/")
        if any(part in ("..", ".") for part in key.split("/")):
            raise ValueError(f"key {key!r} escapes the store root")
        return f"{self.root}/{key}" if self.root else key

    def _rel(self, full: str) -> str:
        return full[len(self.root) + 1 :] if self.root else full

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def read_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)  # one PUT: atomic

    def put_file(self, local: Path, key: str) -> None:
        self.client.upload_file(str(local), self.bucket, self._key(key), Config=transfer_config())

    def put_dir(self, local_dir: Path, prefix: str) -> list[str]:
        """Every file under `local_dir`, uploaded concurrently (parts and files) by one transfer manager.

        Raises the first failure after every transfer has ended (s3transfer aborts a failed multipart
        upload, so no half object is left behind under the key)."""
        from boto3.s3.transfer import create_transfer_manager

        pairs = []
        for path in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
            pairs.append((path, f"{prefix.rstrip('/')}/{path.relative_to(local_dir).as_posix()}"))
        with create_transfer_manager(self.client, transfer_config()) as tm:
            futures = [tm.upload(str(path), self.bucket, self._key(key)) for path, key in pairs]
            errors = []
            for fut in futures:
                try:
                    fut.result()
                except Exception as e:  # collected, then the first is raised below
                    errors.append(e)
        if errors:
            raise errors[0]
        return [key for _, key in pairs]

    def get_file(self, key: str, local: Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.partial")
        self.client.download_file(self.bucket, self._key(key), str(tmp), Config=transfer_config())
        os.replace(tmp, local)

    def _objects(self, prefix: str) -> list[dict[str, Any]]:
        full = self._key(prefix) if prefix else (f"{self.root}/" if self.root else "")
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            out.extend(page.get("Contents", []))
        return out

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self._rel(o["Key"]) for o in self._objects(prefix))

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def delete_prefix(self, prefix: str) -> None:
        # `checkpoints/checkpoint-1` must not take `checkpoints/checkpoint-10` with it.
        prefix = prefix.rstrip("/")
        keys = [o["Key"] for o in self._objects(prefix + "/")]
        if self.exists(prefix):
            keys.append(self._key(prefix))
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            resp = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if resp.get("Errors"):
                first = resp["Errors"][0]
                raise RuntimeError(f"could not delete {first.get('Key')} from {self.uri}: {first.get('Message')}")

    def read_tagged(self, key: str) -> Tagged | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return Tagged(resp["Body"].read(), resp["ETag"], _server_age(resp))

    def write_if(self, key: str, data: bytes, tag: str | None) -> str | None:
        """S3's conditional PUT (`If-None-Match: *` / `If-Match: <ETag>`; AWS since 2024, MinIO, moto). A store
        that answers it with NotImplemented gets a SettingsError naming `store.lease_seconds`."""
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}
        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
        except ClientError as e:
            code = _error_code(e)
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"):
                return None  # changed, created or deleted meanwhile: the caller reads it again
            if code in ("NotImplemented", "501"):
                raise SettingsError(
                    f"store {self.uri}: the endpoint {self.endpoint} does not take conditional writes ({code}), which "
                    "the run's lease needs; set GRPO_STORE__LEASE_SECONDS=0 to run without it (then nothing stops "
                    "two runs of one run_id at once)") from None
            raise
        return resp["ETag"]

    def check_reachable(self) -> None:
        """HeadBucket with few retries, so `check` answers within seconds; the error says what to set, and whether a
        retry may help (`answer_error`)."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = make_client(max_attempts=2, connect_timeout=5, read_timeout=20)
        try:
            client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as e:
            raise answer_error(e, f"s3://{self.bucket}", client.meta.endpoint_url, "store: ") from None


def _server_age(resp: dict[str, Any]) -> float | None:
    """Seconds since the object of a GetObject answer was written, by the server's clock alone: its `Date`
    header less the object's `LastModified`, both whole seconds, so one second less (a lower bound). None
    when either is missing or unreadable."""
    from email.utils import parsedate_to_datetime

    try:
        now = parsedate_to_datetime(resp["ResponseMetadata"]["HTTPHeaders"]["date"])
        return max(0.0, (now - resp["LastModified"]).total_seconds() - 1.0)
    except (KeyError, TypeError, ValueError):
        return None
