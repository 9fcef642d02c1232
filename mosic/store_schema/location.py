"""Where a store lives: a local folder, or an object-store URL such as ``s3://bucket/tracks.zarr``.

``StoreLocation.parse`` reads a store argument once; every file operation of the store goes
through it, so the rest of ``store_schema`` does not care where the bytes are. A local store is
read with ``os`` calls; a remote one through fsspec (``s3://`` needs the ``s3`` extra: s3fs),
and its root and index through zarr's ``FsspecStore``. Credentials, region and endpoint come
from the standard places: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_DEFAULT_REGION`` / ``AWS_ENDPOINT_URL`` (botocore), ``~/.aws/``, or fsspec's
configuration (``FSSPEC_S3_ENDPOINT_URL``, ``~/.config/fsspec/``).

Object stores have no rename and no append: remote parts are built in a local folder and
uploaded whole (``upload``), their ``zarr.json`` last, which is what a local part's rename-free
protocol already needs (a part exists for readers only once its ``zarr.json`` does).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosic.store_schema.errors import StoreError

_INSTALL = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}


@dataclass(frozen=True)
class StoreLocation:
    """A store's place: ``url`` is a local path (as given) or ``protocol://bucket/prefix``."""

    url: str

    @classmethod
    def parse(cls, where: str | Path | StoreLocation) -> StoreLocation:
        """A location from a command-line argument, a path or a location.

        ``file://`` URLs become local paths; any other ``protocol://`` is remote. A remote
        store needs a prefix inside its bucket (``s3://bucket/tracks.zarr``): its writer lock
        is the object beside it.
        """
        if isinstance(where, StoreLocation):
            return where
        text = os.fspath(where)
        if text.startswith("file://"):
            text = text[len("file://") :]
        if "://" not in text:
            return cls(text)
        protocol, rest = text.split("://", 1)
        rest = rest.strip("/")
        if not protocol or not rest or "/" not in rest:
            raise StoreError(
                f"{text}: a remote store needs a bucket and a name, e.g. {protocol}://bucket/"
                "tracks.zarr"
            )
        return cls(f"{protocol}://{rest}")

    @property
    def remote(self) -> bool:
        """Whether the store is in an object store (not a local or mounted folder)."""
        return "://" in self.url

    @property
    def path(self) -> Path | str:
        """What users see and name the store by: a ``Path`` if local, else the URL."""
        return self.url if self.remote else Path(self.url)

    @property
    def name(self) -> str:
        """The store's last name component (``tracks.zarr``)."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.url

    def local(self) -> Path:
        """The folder of a local store."""
        if self.remote:
            raise StoreError(f"{self.url}: a remote store has no local folder")
        return Path(self.url)

    def beside(self, suffix: str) -> str:
        """A path or URL beside the store: its name plus ``suffix`` (the writer lock)."""
        if self.remote:
            return self.url.rstrip("/") + suffix
        return str(Path(self.url).resolve()) + suffix

    # -- remote plumbing -----------------------------------------------------------------

    def filesystem(self) -> Any:
        """The fsspec file system of a remote store (one per process, cached by fsspec)."""
        protocol = self.url.split("://", 1)[0]
        try:
            import fsspec

            return fsspec.filesystem(protocol)
        except ImportError as exc:
            package = _INSTALL.get(protocol, f"an fsspec backend for {protocol}://")
            extra = " (pip install 'mosic[s3]')" if protocol == "s3" else ""
            raise StoreError(f"{self.url}: needs {package}{extra}: {exc}") from None
        except ValueError as exc:
            raise StoreError(f"{self.url}: unknown protocol ({exc})") from None

    def _at(self, relative: str) -> str:
        return f"{self.url}/{relative}" if relative else self.url

    def zarr_store(self, read_only: bool) -> Any:
        """What ``zarr.open_group`` takes for this store: the folder, or an ``FsspecStore``."""
        if not self.remote:
            return self.url
        self.filesystem()  # a clear message if the backend is missing
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.url, read_only=read_only)

    # -- files, by path relative to the store --------------------------------------------

    def read(self, relative: str) -> bytes:
        """A whole file; FileNotFoundError if it is missing."""
        if not self.remote:
            return (Path(self.url) / relative).read_bytes()
        with unreachable(self.url):
            return self.filesystem().cat_file(self._at(relative))

    def read_many(self, relatives: Sequence[str]) -> dict[str, bytes | None]:
        """Whole files, None for each missing one (an object store's are fetched concurrently)."""
        if not self.remote:
            found = {}
            for relative in relatives:
                try:
                    found[relative] = self.read(relative)
                except (FileNotFoundError, NotADirectoryError):
                    found[relative] = None
            return found
        if not relatives:
            return {}
        urls = [self._at(r) for r in relatives]
        with unreachable(self.url):  # whole objects: no start, no end
            got = self.filesystem().cat_ranges(urls, None, None, on_error="return")
        out = {}
        for relative, value in zip(relatives, got, strict=True):
            if isinstance(value, FileNotFoundError):
                out[relative] = None
            elif isinstance(value, Exception):
                with unreachable(self.url):
                    raise value
            else:
                out[relative] = value
        return out

    def size(self, relative: str) -> int:
        """A file's size in bytes; FileNotFoundError if it is missing."""
        if not self.remote:
            path = Path(self.url) / relative
            if not path.is_file():
                raise FileNotFoundError(str(path))
            return path.stat().st_size
        with unreachable(self.url):
            return int(self.filesystem().info(self._at(relative), refresh=True)["size"])

    def exists(self, relative: str = "") -> bool:
        """Whether a file (or, for ``""``, the store itself) exists."""
        if not self.remote:
            return (Path(self.url) / relative).exists()
        fs = self.filesystem()
        fs.invalidate_cache(self._at(relative))
        with unreachable(self.url):
            return bool(fs.exists(self._at(relative)))

    def is_empty(self) -> bool:
        """Whether there is nothing at the store's place (no folder, an empty one, no object)."""
        if not self.remote:
            path = Path(self.url)
            return not path.exists() or not any(path.iterdir())
        return not self.children("")

    def children(self, relative: str) -> list[str]:
        """Names directly under a folder (none if it does not exist), sorted; fresh listing."""
        if not self.remote:
            folder = Path(self.url) / relative
            return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        try:
            with unreachable(self.url):
                found = self.filesystem().ls(self._at(relative), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in found)

    def remove(self, relative: str) -> None:
        """Remove a folder and everything in it (best effort; nothing if it is missing)."""
        if not self.remote:
            import shutil

            shutil.rmtree(Path(self.url) / relative, ignore_errors=True)
            return
        try:
            self.filesystem().rm(self._at(relative), recursive=True)
        except FileNotFoundError:
            pass

    def upload(self, folder: Path, relative: str) -> None:
        """Upload a local folder to ``relative`` whole: every file, the top ``zarr.json`` last
        (so a reader never sees a group whose files are not all there)."""
        fs = self.filesystem()
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        top = folder / "zarr.json"
        for path in [p for p in files if p != top] + [p for p in files if p == top]:
            inside = path.relative_to(folder).as_posix()
            fs.put_file(str(path), self._at(f"{relative}/{inside}" if relative else inside))
        fs.invalidate_cache(self._at(relative))

    def open_file(self, relative: str) -> ShardFile:
        """A file opened for range reads (use as a context manager)."""
        if not self.remote:
            return _LocalFile(Path(self.url) / relative)
        return _RemoteFile(self.filesystem(), self._at(relative))


class ShardFile:
    """A file open for range reads: ``size()`` and ``read(ranges)`` (use with ``with``)."""

    def __enter__(self) -> ShardFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def size(self) -> int:
        """The file's size now (FileNotFoundError if it is missing)."""
        raise NotImplementedError

    def read(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each (offset, length) range."""
        raise NotImplementedError

    def sized_read(
        self, ranges: Sequence[tuple[int, int]]
    ) -> tuple[int, list[bytes | BaseException]]:
        """``size()`` and ``read(ranges)`` at once (concurrently from an object store): the
        reads hold an exception where one failed (a range past the end of a short file), for
        the caller to raise once it has checked the size."""
        return self.size(), list(self.read(ranges))

    def close(self) -> None:
        """Release the file."""


class _LocalFile(ShardFile):
    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY)  # FileNotFoundError if missing

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return [os.pread(self.fd, length, offset) for offset, length in ranges]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _RemoteFile(ShardFile):
    """Range reads of one object: the ranges of one ``read`` are fetched concurrently."""

    def __init__(self, fs: Any, url: str):
        self.fs, self.url = fs, url

    def size(self) -> int:
        with unreachable(self.url):
            return int(self.fs.info(self.url, refresh=True)["size"])

    def read(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if not ranges:
            return []
        starts = [offset for offset, _ in ranges]
        ends = [offset + length for offset, length in ranges]
        paths = [self.url] * len(ranges)
        with unreachable(self.url):
            return list(self.fs.cat_ranges(paths, starts, ends, on_error="raise"))

    def sized_read(
        self, ranges: Sequence[tuple[int, int]]
    ) -> tuple[int, list[bytes | BaseException]]:
        from fsspec.asyn import sync

        async def both() -> list:
            reads = [self.fs._cat_file(self.url, start=o, end=o + n) for o, n in ranges]
            info = self.fs._info(self.url, refresh=True)
            return await asyncio.gather(info, *reads, return_exceptions=True)

        with unreachable(self.url):
            info, *reads = sync(self.fs.loop, both)
            if isinstance(info, BaseException):
                raise info
        return int(info["size"]), reads


class StoreUnreachable(StoreError):
    """An object store that did not answer, or refused (network, credentials, permissions)."""


@contextmanager
def unreachable(url: str) -> Iterator[None]:
    """Within the block, an object store's error (other than a missing object) becomes one
    ``StoreUnreachable`` line naming ``url``."""
    try:
        yield
    except (FileNotFoundError, StoreError):
        raise
    except Exception as exc:
        text = " ".join(str(exc).split()) or "no answer"
        raise StoreUnreachable(f"{url}: {type(exc).__name__}: {text}") from None
