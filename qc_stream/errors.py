"""User-facing errors.

Anything raised as a ``QcError`` is shown by the CLI as one line (``error: ...``) with a non-zero
exit code and no traceback. Raise it at every edge where a user's input or environment is wrong.
"""


class QcError(Exception):
    """An error whose message is meant for the user."""

    exit_code = 2


class ConfigError(QcError):
    """Invalid settings (environment variables, CLI options)."""


class StorageError(QcError):
    """The database cannot be reached or used."""


class InputError(QcError):
    """Bad input data: files, images, registry entries, messages."""
