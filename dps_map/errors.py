"""User-facing errors: one clear line, no traceback (run.py prints them and exits with code 2)."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad config, missing file). Printed as one line, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """An impossible or inconsistent configuration."""


class MissingFileError(UserError):
    """A required file (checkpoint, weights, data) is absent or unreadable.

    The message names the file, what it is, where to get it and the override that points to it.
    """

    def __init__(self, path, what: str, where: str, override: str):
        self.path, self.what, self.where, self.override = str(path), what, where, override
        super().__init__(
            f"missing {what}: '{self.path}' not found. Get it from {where} and point to it with {override}"
        )


class UnsafeCheckpointError(UserError):
    """A checkpoint that cannot be loaded with torch.load(weights_only=True) (it needs pickle execution)."""
