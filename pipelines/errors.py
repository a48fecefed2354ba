"""Exceptions that mean "the user's input or request is wrong": one line on stderr, exit 2."""
from pydantic import ValidationError

from pipelines.flows import BuildError
from pipelines.ingest.discover import InputError
from pipelines.ingest.naming import RuleFileError
from pipelines.io.publish import PublishError
from pipelines.io.shards import ShardError
from pipelines.io.volumes import VolumeReadError

USER_ERRORS = (BuildError, InputError, RuleFileError, PublishError, VolumeReadError, ValidationError,
               FileNotFoundError, NotADirectoryError, PermissionError, ShardError)
