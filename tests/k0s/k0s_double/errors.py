"""Errors that end a k0s command with `Error: <message>` on stderr and exit status 1."""


class K0sError(Exception):
    """A failure that k0s reports as `Error: <message>`."""


class KubectlError(Exception):
    """A failure that kubectl reports with its own prefix, such as `Error from server (NotFound): ...`."""
