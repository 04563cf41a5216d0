"""The object storage port: put/get/delete bytes by key.

Two adapters: `LocalStorage` (a directory, the default for development and tests) and
`S3Storage` (any S3-compatible service through boto3: AWS S3, MinIO from
docker-compose). `get_storage()` picks one from the settings (`STORAGE_BACKEND`).
Keys are relative paths of `[A-Za-z0-9._/-]` without `..`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from core.settings import Settings, get_settings

_KEY_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def _check_key(key: str) -> str:
    if not _KEY_RE.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class Storage(Protocol):
    """Where uploaded files live."""

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Store `data` under `key` (overwrites)."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes under `key`; KeyError when absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key` (absent: no error)."""
        ...


class LocalStorage:
    """Files under a root directory (created on first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)
        return path.read_bytes()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Storage:
    """An S3-compatible bucket through boto3 (`endpoint_url` for MinIO)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        client: Any = None,
    ) -> None:
        import boto3

        self.bucket = bucket
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
        )

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=_check_key(key), Body=data, ContentType=content_type
        )

    def get(self, key: str) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=_check_key(key))
        except self.client.exceptions.NoSuchKey:
            raise KeyError(key) from None
        return bytes(obj["Body"].read())

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=_check_key(key))


def storage_from(settings: Settings) -> Storage:
    """The adapter `settings` name: `local` (STORAGE_DIR) or `s3` (S3_*)."""
    if settings.storage_backend == "s3":
        return S3Storage(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )
    return LocalStorage(settings.storage_dir)


@lru_cache(maxsize=1)
def get_storage() -> Storage:
    """The process's storage adapter (from `get_settings()`)."""
    return storage_from(get_settings())
