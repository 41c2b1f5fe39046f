"""The HTTP routes, as a client sees them, on a live server (tests/serve/conftest.py `service`): health, metadata,
the OpenAPI schema, predictions equal to `cnnkit predict --json`, every refusal a 4xx with {"detail": ...} (never
a 500, never a hang), and concurrent requests batched into shared model calls."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cnnkit import api
from cnnkit.serve.client import Client, as_file


@pytest.fixture
def client(service):
    with Client(service.url, timeout=30) as c:
        yield c


def _expected(run: Path, paths: list[Path], names: list[str] | None = None) -> list[dict]:
    rows = api.predict(run, paths)
    return [{**row, "path": name} for row, name in zip(rows, names or [p.name for p in paths])]


def test_healthz_metadata_docs_and_schema(client: Client, tiny_run: Path) -> None:
    health = client.get("/healthz")
    assert health.status == 200 and health.json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    assert meta["classes"] == ["cat", "dog"] and meta["architecture"] == "lenet5" and meta["problem"] == "binary"
    assert meta["source"] == str(tiny_run) and meta["runtime"] == "torch"
    assert meta["limits"]["max_images"] == 16 and meta["limits"]["max_request_bytes"] == 20 * 1024 * 1024
    docs = client.get("/docs")
    assert docs.status == 200 and b"swagger" in docs.body.lower()
    schema = client.get("/openapi.json").json()
    assert {"/healthz", "/metadata", "/predict"} <= set(schema["paths"])
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["image"] and body["properties"]["image"]["items"]["format"] == "binary"
    assert body["properties"]["image"]["maxItems"] == 16 and body["additionalProperties"] is False
    assert {"200", "413", "415", "422"} <= set(schema["paths"]["/predict"]["post"]["responses"])


def test_one_image_gives_predicts_json(client: Client, tiny_run: Path, images: dict[str, Path]) -> None:
    assert client.predict([images["rgb.png"]]) == _expected(tiny_run, [images["rgb.png"]])


def test_several_images_in_one_request_in_order(client: Client, tiny_run: Path, images: dict[str, Path]) -> None:
    names = ["photo.jpg", "grey.png", "bitmap.bmp", "web.webp", "anim.gif", "rgb.png", "photo.jpg"]
    paths = [images[n] for n in names]
    assert client.predict(paths) == _expected(tiny_run, paths)
    # the uploaded name is the path, whatever it is; the type may be left out (the bytes decide)
    files = [("a/b c.jpg", images["photo.jpg"].read_bytes(), None),
             ("x", images["rgb.png"].read_bytes(), "application/octet-stream")]
    assert client.predict(files) == _expected(tiny_run, [images["photo.jpg"], images["rgb.png"]], ["a/b c.jpg", "x"])


def _refusal(client: Client, files: list, status: int, *fragments: str) -> str:
    answer = client.post_images(files)
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers.get("content-type") == "application/json"
    detail = answer.json()["detail"]
    for fragment in fragments:
        assert fragment in detail, (fragment, detail)
    return detail


def test_corrupt_truncated_and_empty_images_are_422_naming_them(client: Client, images: dict[str, Path],
                                                                 truncated_png: Path) -> None:
    good = as_file(images["rgb.png"])
    _refusal(client, [good, ("cut.png", truncated_png.read_bytes(), "image/png")], 422, "'cut.png'", "truncated")
    _refusal(client, [("junk.jpg", b"\xff\xd8\xff\xe0" + b"junk" * 50, "image/jpeg")], 422, "'junk.jpg'")
    _refusal(client, [("nothing.png", b"", "image/png")], 422, "'nothing.png' is empty")
    assert client.get("/healthz").status == 200 and client.predict([good])  # the server lives on


def test_a_png_bomb_is_413_at_once(client: Client, png_bomb: Path) -> None:
    start = time.perf_counter()
    _refusal(client, [("bomb.png", png_bomb.read_bytes(), "image/png")], 413, "'bomb.png' is too large")
    assert time.perf_counter() - start < 2.0


def test_types_that_are_not_served_are_415(client: Client, images: dict[str, Path]) -> None:
    _refusal(client, [("rgb.png", images["rgb.png"].read_bytes(), "text/plain")], 415, "'text/plain'")
    _refusal(client, [("notes.txt", b"plain text, no image" * 5, None)], 415, "'notes.txt' is not an image")
    answer = client.request("POST", "/predict", json.dumps({"image": "x"}).encode(),
                            {"Content-Type": "application/json"})
    assert answer.status == 415 and "multipart/form-data" in answer.json()["detail"]


def test_too_many_images_and_bad_fields_are_4xx(client: Client, images: dict[str, Path]) -> None:
    good = as_file(images["grey.png"])
    _refusal(client, [good] * 17, 413, "17 images in one request; at most 16")
    assert len(client.predict([good] * 16)) == 16
    answer = client.request("POST", "/predict", *_body([("file", "a.png", b"x")]))
    assert answer.status == 422 and "unknown form field 'file'" in answer.json()["detail"]
    answer = client.request("POST", "/predict", *_body([("image", None, b"just text")]))
    assert answer.status == 422 and "must hold files" in answer.json()["detail"]
    answer = client.request("POST", "/predict", b"--x--\r\n", {"Content-Type": "multipart/form-data; boundary=x"})
    assert answer.status == 422 and "no image" in answer.json()["detail"]
    answer = client.request("POST", "/predict", b"garbage", {"Content-Type": "multipart/form-data"})
    assert answer.status == 400 and "boundary" in answer.json()["detail"]
    assert client.get("/predict").status == 405 and client.get("/nowhere").json() == {"detail": "Not Found"}


def _body(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart body of (field, filename or None for a text field, bytes) parts."""
    chunks = []
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        chunks.append(f"--B\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(chunks) + b"--B--\r\n", {"Content-Type": "multipart/form-data; boundary=B"}


def _raw(service, head: str, body_chunks, timeout: float = 10.0) -> tuple[int, dict]:
    """Send a request by hand (the body as it comes, possibly never finished); the status and JSON answer."""
    with socket.create_connection((service.host, service.port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer is already there
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head_part, _, payload = answer.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), json.loads(payload[:_length(answer)])


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def test_an_oversized_body_is_413_before_it_is_read(service) -> None:
    start = time.perf_counter()
    head = ("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
            f"Content-Length: {30 * 1024 * 1024}\r\n\r\n")
    status, answer = _raw(service, head, [b"--B\r\n"])  # 30 MB announced, 5 bytes sent: no waiting for the rest
    assert status == 413 and "30 MB, over the limit of 20 MB" in answer["detail"]
    assert time.perf_counter() - start < 2.0


def test_an_oversized_chunked_body_is_413_while_it_streams(service) -> None:
    head = ("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    part = b'--B\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
    mb = b"\x00" * (1024 * 1024)
    chunks = [b"%x\r\n%s\r\n" % (len(c), c) for c in [part] + [mb] * 64]  # 64 MB, never finished
    status, answer = _raw(service, head, chunks)
    assert status == 413 and "over the limit of 20 MB" in answer["detail"]


def test_concurrent_requests_all_answer_right_and_share_model_calls(service, tiny_run: Path,
                                                                    images: dict[str, Path]) -> None:
    names = ["rgb.png", "grey.png", "photo.jpg", "bitmap.bmp"]
    expected = dict(zip(names, _expected(tiny_run, [images[n] for n in names])))
    before = dict(service.batcher.stats)

    def worker(k: int) -> list[bool]:
        oks = []
        with Client(service.url, timeout=60) as client:
            for j in range(4):
                chosen = [names[(k + j + i) % 4] for i in range(1 + (k + j) % 3)]
                answer = client.predict([images[n] for n in chosen])
                oks.append(answer == [expected[n] for n in chosen])
        return oks

    with ThreadPoolExecutor(16) as pool:
        results = [ok for oks in pool.map(worker, range(16)) for ok in oks]
    assert results == [True] * 64
    requests = service.batcher.stats["requests"] - before["requests"]
    batches = service.batcher.stats["batches"] - before["batches"]
    assert requests == 64 and batches < requests  # requests that arrived together shared a model call
    assert service.batcher.stats["largest_batch"] <= 16


def test_a_full_queue_is_503_with_retry_after(service, images: dict[str, Path], monkeypatch) -> None:
    from cnnkit.serve.batcher import Busy

    def full(items):
        raise Busy("256 images are waiting for the model (at most 256)")

    monkeypatch.setattr(service.batcher, "submit", full)
    with Client(service.url) as client:
        answer = client.post_images([as_file(images["rgb.png"])])
    assert answer.status == 503 and answer.headers.get("retry-after") == "1"
    assert answer.json()["detail"].startswith("busy: 256 images are waiting")
    assert not list(service.folder.iterdir())  # the stored upload was deleted


def test_uploads_are_deleted_after_their_model_call(service, client: Client, images: dict[str, Path]) -> None:
    client.predict([images["rgb.png"]] * 3)
    assert not list(service.folder.iterdir())


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(service) -> None:
    """Schemathesis fuzzes the live schema, valid and invalid requests: never a 5xx; statuses, content types,
    headers and bodies as documented. Left out: positive_data_acceptance (a schema cannot say that the `image`
    bytes must be a real image: random bytes are schema-valid, and refused) and negative_data_rejection (its
    multipart encoder drops some of the invalid parts it generates, so that what goes on the wire is valid)."""
    runner = Path(sys.executable).parent / "schemathesis"
    if not runner.is_file():
        pytest.skip("schemathesis is not installed (pip install schemathesis)")
    done = subprocess.run([str(runner), "--no-color", "run", f"{service.url}/openapi.json", "--checks", "all",
                           "--exclude-checks", "positive_data_acceptance,negative_data_rejection",
                           "--max-examples", "60", "--seed", "1", "--workers", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout and " 0 generated" not in done.stdout
