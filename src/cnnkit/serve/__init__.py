"""`cnnkit serve RUN|FILE.onnx`: predictions over HTTP (FastAPI on uvicorn)."""
