"""Search as a service: the serving index and its champion's query encoder loaded once, behind HTTP.

- :mod:`~anchorprune.serving.state`: the loaded index, the encoders, the version each request pins (hot swap)
- :mod:`~anchorprune.serving.catalog`: the dataset's pages by id (document, page number, snippet, image)
- :mod:`~anchorprune.serving.app`: the FastAPI app (``/search``, ``/health``, ``/pages/...``)
- :mod:`~anchorprune.serving.viewer`: the page viewer (``/``) and the kept-vector overlays

``anchorprune serve-search`` runs it with uvicorn (``docs/serving.md``).
"""
