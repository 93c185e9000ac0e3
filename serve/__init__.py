"""The HTTP service (the ``serve`` extra: FastAPI, uvicorn, prometheus-client): a thin shell over the library.

It validates a request, admits it, runs it on the model's one ONNX Runtime session in a bounded thread pool, and
returns or streams the ``Explanation``; it does no AtMan of its own. Nothing here is imported by the base install.
"""
