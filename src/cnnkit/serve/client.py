"""A small client of `cnnkit serve`, on the standard library only (http.client, one kept-alive connection).

    with Client("http://127.0.0.1:8000") as client:
        client.predict(["cat.jpg", "dog.png"])     # the server's JSON: one entry per image, in order
        client.get("/metadata").json()             # any route: Response(status, headers, body)

`encode_multipart` builds the multipart/form-data body the server reads (field `image`, repeatable).
"""
from __future__ import annotations

import http.client
import json
import mimetypes
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

File = tuple[str, bytes, str | None]  # (file name, bytes, content type or None: no Content-Type header)


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


class ServeError(Exception):
    """A non-200 answer of /predict: its status and detail."""

    def __init__(self, status: int, detail: Any):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def encode_multipart(files: Sequence[File], name: str = "image") -> tuple[bytes, str]:
    """(body, Content-Type header) of a multipart/form-data request with each file in the field `name`."""
    boundary = uuid.uuid4().hex
    parts = []
    for filename, data, content_type in files:
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"; '
                f'filename="{_quoted(filename)}"\r\n')
        if content_type is not None:
            head += f"Content-Type: {content_type}\r\n"
        parts += [head.encode() + b"\r\n", data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def as_file(path: str | Path) -> File:
    """(name, bytes, content type guessed from the suffix) of an image file on disk."""
    path = Path(path)
    return path.name, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class Client:
    """Requests to one server over one HTTP/1.1 connection, reopened once when the server closed it."""

    def __init__(self, url: str, timeout: float = 60.0):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                answer = self._conn.getresponse()
                response = Response(answer.status, answer.read(), dict(answer.getheaders()))
            except TimeoutError:
                self.close()
                raise
            except (OSError, http.client.HTTPException):  # a kept-alive connection the server closed meanwhile
                self.close()
                if attempt == 2:
                    raise
                continue
            if answer.will_close:
                self.close()
            return response
        raise AssertionError("unreachable")

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post_images(self, files: Sequence[File], path: str = "/predict") -> Response:
        body, content_type = encode_multipart(files)
        return self.request("POST", path, body, {"Content-Type": content_type})

    def predict(self, images: Sequence[str | Path | File]) -> list:
        """The server's predictions for image files (paths, or (name, bytes, type)); ServeError unless 200."""
        answer = self.post_images([item if isinstance(item, tuple) else as_file(item) for item in images])
        if answer.status != 200:
            try:
                detail = answer.json().get("detail")
            except ValueError:
                detail = answer.body[:200]
            raise ServeError(answer.status, detail)
        return answer.json()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
