"""The error the JSON API answers with: a status code, a message in plain words, extra headers.

Its own module so that the API and the audio serving it delegates to raise the same error.
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, code: int, message: str, **headers: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers
