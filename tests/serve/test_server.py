"""`cnnkit serve` end to end: the socket (a port in use is one line; port 0 is a free one), a service started and
stopped in a thread, the real command serving an exported ONNX file until Ctrl-C, bad command lines as one-line
errors, and `cnnkit serve --help` without torch or FastAPI."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.conftest import assert_one_line_error, run_cli

from cnnkit import api
from cnnkit.errors import CnnkitError
from cnnkit.serve.client import Client
from cnnkit.serve.server import Service, bind


@pytest.fixture
def taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield holder.getsockname()[1]


def test_bind_gives_a_free_port_for_0_and_one_line_for_a_port_in_use(taken_port: int) -> None:
    with bind("127.0.0.1", 0) as sock:
        assert sock.getsockname()[1] > 0
    with pytest.raises(CnnkitError, match=f"^cannot listen on 127.0.0.1:{taken_port}: the port is in use"):
        bind("127.0.0.1", taken_port)
    with pytest.raises(CnnkitError, match="--port must be 0 to 65535"):
        bind("127.0.0.1", 70000)
    with pytest.raises(CnnkitError, match="unknown host"):
        bind("no-such-host.invalid", 0)


def test_a_service_in_a_thread_starts_answers_and_cleans_up(tiny_run: Path, images: dict[str, Path]) -> None:
    service = Service(tiny_run, port=0, log_level="warning")
    assert service.url == f"http://127.0.0.1:{service.port}"
    with service, Client(service.url) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.predict([images["rgb.png"]])[0]["path"] == "rgb.png"
    assert not service.folder.exists() and not service.batcher.alive
    with pytest.raises(ConnectionError):
        Client(service.url, timeout=2).get("/healthz")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_command_serves_an_onnx_file_until_ctrl_c(capsys, tiny_run: Path, images: dict[str, Path]) -> None:
    """`cnnkit serve FILE.onnx` in this process's main thread (as from a shell); a client thread checks the answers,
    then presses Ctrl-C (SIGINT to this process) once the server runs."""
    onnx = api.export(tiny_run)
    paths = [images["rgb.png"], images["photo.jpg"], images["grey.png"]]
    expected = [{**row, "path": p.name} for row, p in zip(api.predict(onnx, paths), paths)]
    port, seen = _free_port(), {}

    def client() -> None:
        with Client(f"http://127.0.0.1:{port}", timeout=30) as c:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    seen["health"] = c.get("/healthz").json()
                    break
                except ConnectionError:
                    time.sleep(0.05)
            try:
                seen["predict"] = c.predict(paths)  # the JSON of `cnnkit predict FILE.onnx --json`
                seen["metadata"] = c.get("/metadata").json()
                seen["too many"] = c.post_images([("a.png", b"", None)] * 4).status
            finally:
                os.kill(os.getpid(), signal.SIGINT)

    helper = threading.Thread(target=client)
    helper.start()
    code, out, err = run_cli(capsys, "serve", str(onnx), "--port", str(port), "--max-images", "3",
                             "--log-level", "warning")
    helper.join(10)
    assert code == 0 and "Traceback" not in err, err
    assert out == (f"serving {onnx} (binary, onnxruntime) on http://127.0.0.1:{port}  "
                   f"(API: http://127.0.0.1:{port}/docs; Ctrl-C stops)\n")
    assert seen["health"] == {"status": "ok"} and seen["predict"] == expected and seen["too many"] == 413
    assert seen["metadata"]["runtime"] == "onnxruntime" and seen["metadata"]["limits"]["max_images"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_the_command_in_a_process_of_its_own_stops_cleanly(tiny_run: Path, images: dict[str, Path],
                                                           stop: signal.Signals) -> None:
    """The real `python -m cnnkit serve RUN --port 0`: its first line names the free port; Ctrl-C or SIGTERM ends it
    with status 0, no traceback, its upload folder gone."""
    process = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", str(tiny_run), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # "serving RUN (problem, runtime) on URL  (...)"
    try:
        assert line.startswith(f"serving {tiny_run} (binary, torch) on http://127.0.0.1:"), line
        with Client(line.split(" on ", 1)[1].split()[0], timeout=30) as client:
            assert client.predict([images["rgb.png"]])[0]["path"] == "rgb.png"
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and "Traceback" not in err, err
    assert "Shutting down" in err and "Finished server process" in err


@pytest.mark.parametrize(("args", "fragments"), [
    (["serve", "no/such/run"], ["no run folder or pretrained weights called 'no/such/run'"]),
    (["serve", "missing.onnx"], ["ONNX file not found"]),
    (["serve", "RUN", "--score-threshold", "0.3"], ["--score-threshold is not supported for a classification run"]),
    (["serve", "RUN", "--port", "PORT"], ["cannot listen on 127.0.0.1:PORT: the port is in use"]),
    (["serve", "RUN", "--port", "99999"], ["argument --port: must be 0 to 65535"]),
    (["serve", "RUN", "--max-request-mb", "0"], ["argument --max-request-mb: must be positive"]),
    (["serve", "RUN", "--max-images", "300"], ["--max-queued (256) must hold at least one request's images"]),
])
def test_a_bad_command_line_is_one_line(capsys, tiny_run: Path, taken_port: int, args: list[str],
                                        fragments: list[str]) -> None:
    fill = {"RUN": str(tiny_run), "PORT": str(taken_port)}
    args = [fill.get(a, a) for a in args]
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, *(f.replace("PORT", str(taken_port)) for f in fragments))


def test_serve_help_imports_neither_torch_nor_fastapi() -> None:
    probe = ("import contextlib, io, json, sys\nfrom cnnkit.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
             "    try:\n        main(['serve', '--help'])\n    except SystemExit:\n        pass\n"
             "print(json.dumps([out.getvalue()[:40], sorted({m.split('.')[0] for m in sys.modules} & "
             "{'torch', 'fastapi', 'uvicorn', 'PIL', 'numpy', 'starlette'})]))")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    usage, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    assert usage.startswith("usage: cnnkit serve") and heavy == []
    assert time.perf_counter() - start < 10
