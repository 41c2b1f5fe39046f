"""The standard-library client: the multipart body the server reads, the guessed types, a refusal as ServeError,
and a connection the server closed reopened."""
from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import pytest

from cnnkit.serve.client import Client, ServeError, as_file, encode_multipart


def test_encode_multipart_writes_one_part_per_file() -> None:
    body, content_type = encode_multipart([("a.png", b"\x89PNG...", "image/png"), ('q"uote.jpg', b"\xff\xd8", None)])
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = list(message.iter_parts())
    assert [p.get_param("filename", header="content-disposition") for p in parts] == ["a.png", 'q"uote.jpg']
    assert {p.get_param("name", header="content-disposition") for p in parts} == {"image"}
    assert parts[0]["content-type"] == "image/png" and parts[1]["content-type"] is None
    assert parts[0].get_payload(decode=True) == b"\x89PNG..."


def test_as_file_guesses_the_type(images: dict[str, Path], tmp_path: Path) -> None:
    assert as_file(images["photo.jpg"])[::2] == ("photo.jpg", "image/jpeg")
    (tmp_path / "blob").write_bytes(b"x")
    assert as_file(tmp_path / "blob") == ("blob", b"x", "application/octet-stream")


def test_the_client_against_the_server(service, images: dict[str, Path]) -> None:
    with Client(service.url) as client:
        answer = client.post_images([('q"uote.png', images["rgb.png"].read_bytes(), "image/png")])
        assert answer.status == 200 and answer.json()[0]["path"] == 'q"uote.png'
        with pytest.raises(ServeError) as refused:
            client.predict([("notes.txt", b"no image here", "text/plain")])
        assert refused.value.status == 415 and "'text/plain'" in refused.value.detail
        client._conn.sock.close()  # as when the server dropped an idle connection: the client opens another
        assert client.get("/healthz").json() == {"status": "ok"}
