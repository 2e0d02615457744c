"""Errors the user is meant to read. The CLI prints them as one line (no traceback unless --debug)."""


class OspoError(Exception):
    """Base class: a problem with the user's input or environment, with a message saying what to do."""


class ModelLoadError(OspoError):
    """A model path or hub id that cannot be loaded as a Janus checkpoint."""


class InputError(OspoError, ValueError):
    """Bad arguments: empty prompt lists, images of the wrong size, mismatched lengths."""
