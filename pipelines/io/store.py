"""The object store: `s3://` locations, a client from the standard AWS chain, and the few requests
SpineForge makes of it.

Credentials and the endpoint come from boto3's own chain: environment (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`), `~/.aws/config` and `~/.aws/credentials`,
profiles, instance roles. Nothing here prints or logs them; errors name the location and the store's
error code only.

Writes are create-only (`If-None-Match: *`): an existing object is never replaced, so a content-named
object and a version's `dataset.json` are written exactly once. Every upload carries its SHA-256, which
the server checks (a corrupted upload is refused, not stored).
"""
from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import PublishError, StoreError

SCHEME = "s3://"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
PART_BYTES = 16 * 1024 * 1024  # multipart upload and ranged download part (S3's minimum part is 5 MiB)


def is_remote(location) -> bool:
    return str(location).startswith(SCHEME)


@dataclass(frozen=True)
class S3Url:
    """`s3://bucket/prefix`: a bucket and a key prefix (no leading or trailing slash)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Url:
        if not is_remote(url):
            raise StoreError(f"{url}: not an s3:// URL")
        bucket, _, prefix = str(url)[len(SCHEME):].partition("/")
        if not _BUCKET.match(bucket):
            raise StoreError(f"{url}: {bucket!r} is not a valid bucket name (3-63 lower-case letters, digits, '.', '-')")
        return cls(bucket, prefix.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p)

    def child(self, *parts: str) -> S3Url:
        return S3Url(self.bucket, self.key(*parts))

    def parent(self) -> S3Url:
        return S3Url(self.bucket, self.prefix.rsplit("/", 1)[0] if "/" in self.prefix else "")

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"


@dataclass(frozen=True)
class StoreOptions:
    """How to reach the store; picklable, so DataLoader workers make their own client from it."""

    endpoint_url: str | None = None  # None: AWS_ENDPOINT_URL / the config file / AWS itself
    profile: str | None = None  # None: AWS_PROFILE or the default profile

    def client(self):
        import boto3
        from botocore.config import Config

        try:
            session = boto3.session.Session(profile_name=self.profile)
        except Exception as exc:  # ProfileNotFound and friends: name the profile, nothing else
            raise StoreError(f"AWS profile {self.profile!r}: {type(exc).__name__}") from None
        config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32,
                        connect_timeout=10, read_timeout=60, request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)


def b64_sha256(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or str(
        response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def is_precondition_failed(exc: Exception) -> bool:
    return error_code(exc) in ("PreconditionFailed", "412")


def is_missing(exc: Exception) -> bool:
    return error_code(exc) in ("NoSuchKey", "404", "NotFound")


@contextmanager
def store_errors(where: str) -> Iterator[None]:
    """botocore's exceptions as StoreError naming `where` (never the credentials)."""
    from botocore import exceptions as bx

    try:
        yield
    except bx.NoCredentialsError:
        raise StoreError(f"{where}: no credentials for the object store (set AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or ~/.aws/credentials)") from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError) as exc:
        raise StoreError(f"{where}: cannot reach the object store at {exc.kwargs.get('endpoint_url', '?')} "
                         "(set AWS_ENDPOINT_URL or --endpoint-url for an S3-compatible server)") from None
    except bx.ClientError as exc:
        code = error_code(exc)
        hint = {"NoSuchBucket": "no such bucket", "AccessDenied": "access denied", "403": "access denied",
                "404": "not found", "NotFound": "not found",
                "InvalidAccessKeyId": "the access key is not known to the store",
                "SignatureDoesNotMatch": "the secret key does not match the access key"}.get(code, code)
        raise StoreError(f"{where}: {hint}") from None


def _put_if_absent(client, url: S3Url, key: str, data: bytes) -> bool:
    """One create-only PUT carrying the data's SHA-256; False when the key already exists."""
    try:
        client.put_object(Bucket=url.bucket, Key=key, Body=data, IfNoneMatch="*",
                          ChecksumSHA256=b64_sha256(hashlib.sha256(data).digest()))
    except Exception as exc:
        if is_precondition_failed(exc):
            return False
        raise
    return True


def put_bytes_if_absent(client, url: S3Url, key: str, data: bytes) -> bool:
    """Create `key` holding `data`; False (and nothing written) when the key already exists."""
    with store_errors(f"{url.bucket}/{key}"):
        return _put_if_absent(client, url, key, data)


def _read_parts(path: Path, part_bytes: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(part_bytes):
            yield chunk


def upload_file_if_absent(client, url: S3Url, key: str, path: Path, sha256: str,
                          part_bytes: int = PART_BYTES) -> bool:
    """Create `key` from a local file whose content must hash to `sha256`; False when the key exists.

    Each request carries the SHA-256 of what it sends; a file that no longer hashes to `sha256` (changed
    since its version was published) is refused before anything becomes visible."""
    size = Path(path).stat().st_size
    where = f"{url.bucket}/{key}"
    whole = hashlib.sha256()

    def check() -> None:
        if whole.hexdigest() != sha256:
            raise PublishError(f"{path}: sha256 {whole.hexdigest()[:12]}... differs from the version's record "
                               f"{sha256[:12]}... (the file changed since it was published; run spineforge validate)")

    with store_errors(where):
        if size <= part_bytes:
            data = Path(path).read_bytes()
            whole.update(data)
            check()
            return _put_if_absent(client, url, key, data)
        upload = client.create_multipart_upload(Bucket=url.bucket, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
        try:
            parts = []
            for number, chunk in enumerate(_read_parts(path, part_bytes), start=1):
                whole.update(chunk)
                digest = b64_sha256(hashlib.sha256(chunk).digest())
                etag = client.upload_part(Bucket=url.bucket, Key=key, UploadId=upload, PartNumber=number,
                                          Body=chunk, ChecksumSHA256=digest)["ETag"]
                parts.append({"PartNumber": number, "ETag": etag, "ChecksumSHA256": digest})
            check()
            client.complete_multipart_upload(Bucket=url.bucket, Key=key, UploadId=upload, IfNoneMatch="*",
                                             MultipartUpload={"Parts": parts})
        except BaseException as exc:
            try:
                client.abort_multipart_upload(Bucket=url.bucket, Key=key, UploadId=upload)
            except Exception:  # the upload may be gone already; the store expires the rest
                pass
            if is_precondition_failed(exc):
                return False
            raise
    return True


def get_bytes(client, url: S3Url, key: str) -> bytes | None:
    """The whole object, or None when there is no such key."""
    with store_errors(f"{url.bucket}/{key}"):
        try:
            return client.get_object(Bucket=url.bucket, Key=key)["Body"].read()
        except Exception as exc:
            if is_missing(exc):
                return None
            raise


def head(client, url: S3Url, key: str) -> dict | None:
    with store_errors(f"{url.bucket}/{key}"):
        try:
            return client.head_object(Bucket=url.bucket, Key=key)
        except Exception as exc:
            if is_missing(exc):
                return None
            raise


@dataclass(frozen=True)
class Listed:
    key: str
    bytes: int
    modified: float  # seconds since the epoch


def list_objects(client, url: S3Url, prefix: str) -> dict[str, Listed]:
    """Every object under `prefix` (a key prefix), by key."""
    out = {}
    with store_errors(f"{url.bucket}/{prefix}"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                out[item["Key"]] = Listed(item["Key"], int(item["Size"]), item["LastModified"].timestamp())
    return out


def list_folders(client, url: S3Url, prefix: str) -> list[str]:
    """The names directly under `prefix/` that hold objects (S3's common prefixes)."""
    names = []
    with store_errors(f"{url.bucket}/{prefix}"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=prefix.rstrip("/") + "/",
                                                                     Delimiter="/"):
            names += [p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in page.get("CommonPrefixes", [])]
    return names


def delete_keys(client, url: S3Url, keys: list[str]) -> None:
    with store_errors(f"{url.bucket}/{url.prefix}"):
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            result = client.delete_objects(Bucket=url.bucket, Delete={"Objects": batch, "Quiet": True})
            if result.get("Errors"):
                first = result["Errors"][0]
                raise StoreError(f"{url.bucket}/{first.get('Key')}: cannot delete ({first.get('Code')})")
