"""The store's exceptions; str() of each is one line."""

from __future__ import annotations


class StoreError(Exception):
    """A store that cannot be opened or used as asked."""


class DamagedData(StoreError):
    """Stored bytes that are missing, truncated or fail their checksum (never decoded)."""


class CorruptVideo(StoreError):
    """A video whose stored data is missing or damaged; str() names the video and the piece."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"video {key!r}: {reason}")
        self.key = key
        self.reason = reason
