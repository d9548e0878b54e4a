"""Errors whose message is safe and useful to show an operator as one line.

The CLI prints ``str(error)`` of these and exits non-zero; nothing in their messages may
contain secrets or anything a person wrote.
"""


class OperatorError(Exception):
    """A problem the person running the bot can fix; the message says how."""


class ConfigError(OperatorError):
    """Missing or invalid configuration."""


class KeyringError(OperatorError):
    """The encryption keyring is missing, unreadable or malformed."""
