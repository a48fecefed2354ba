"""Every SpineForge exception, defined before anything that raises one.

`USER_ERRORS` are the ones that mean "the input or the request is wrong": the CLI prints them as
one line on stderr and exits 2. This module imports nothing of the pipeline, so any layer may use it.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from schemas.manifest import QC, QC_REASONS


class VolumeReadError(Exception):
    """A file that exists in the input but cannot be read as an image."""

    def __init__(self, path: Path, reason: str, code: str = QC.UNREADABLE):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.code = code  # QC reason of a case whose file this is (schemas.manifest.QC_REASONS)


class InputError(Exception):
    """An input root that cannot be used at all (missing, not a folder), or no inputs given."""


class RuleFileError(ValueError):
    """A naming-rule file that does not follow schemas/rules.py."""


class QCError(Exception):
    """A quarantinable problem of one case: a reason code (schemas.manifest.QC_REASONS) and a message.

    `hashes` holds the content hashes of the case's files read before the problem was found.
    """

    def __init__(self, reason: str, message: str, hashes: dict[str, str] | None = None):
        if reason not in QC_REASONS:
            raise ValueError(f"unknown QC reason code {reason!r}")
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.hashes = dict(hashes or {})


class PublishError(Exception):
    """A version that cannot be published (clash with an immutable version, no space, race lost)."""


class ShardError(Exception):
    """A shard that is missing, unreadable, corrupt or disagrees with the manifest (names the file)."""


class StoreError(Exception):
    """An object-store request that cannot be served: no credentials, unreachable endpoint, no such bucket
    or version, denied access, an object that differs from its recorded hash, a cache that is too small."""


class ExportError(Exception):
    """A version that cannot be exported in the requested layout."""


class BuildError(Exception):
    """A build that cannot start or cannot publish anything."""


class MemoryPlanError(BuildError):
    """Not enough memory for the requested workers to hold the largest case."""


USER_ERRORS = (BuildError, InputError, RuleFileError, PublishError, VolumeReadError, ValidationError, ExportError,
               FileNotFoundError, NotADirectoryError, PermissionError, ShardError, StoreError)
