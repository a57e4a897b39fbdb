"""The HTTP adapter: the engine's JSON API as a Quart-Trio app served by hypercorn.

``create_app(engine)`` builds the app from the route table (``routes.ROUTES``), which also
generates the OpenAPI document (``/api/v1/openapi.json``) and the docs page (``/docs``).
``serve(engine, host=..., port=...)`` runs it in this Trio process; ``run_workers(config,
n)`` runs n worker processes, each with its own engine, on one listening socket.
"""

from assay.adapters.http._app import create_app
from assay.adapters.http._openapi import build_openapi
from assay.adapters.http._server import bind_sockets, run_workers, serve
from assay.adapters.http.routes import ROUTES

__all__ = ["ROUTES", "bind_sockets", "build_openapi", "create_app", "run_workers", "serve"]
