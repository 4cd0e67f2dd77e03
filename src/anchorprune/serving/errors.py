"""What the search service refuses: a status and one line."""

from __future__ import annotations


class ClientError(Exception):
    """A request the service refuses: status and one line."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
