"""`cnnkit serve RUN|FILE.onnx`: predictions over HTTP (FastAPI on uvicorn). A layer above cnnkit.api, below the CLI.

    server.py   Service: the model opened once, the socket bound, uvicorn run (Ctrl-C stops); bind
    app.py      the FastAPI app: GET /healthz, GET /metadata, POST /predict (multipart field `image`), /docs
    batcher.py  Batcher: one worker thread owns the model; requests that arrive together share one model call
    model.py    ServedModel: a run, weights or FILE.onnx through its recipe's predict (the JSON of `cnnkit predict`)
    uploads.py  one upload checked (type, format, pixels from the header, a full decode) before the model sees it
    limits.py   Limits: request bytes, image pixels, images per request, batch size and wait, queue, timeout
    client.py   a standard-library client (and the multipart encoder) for scripts, tests and benchmarks

Nothing here is imported by `cnnkit --help`: the parser reads only limits.py (no torch, no FastAPI).
"""
