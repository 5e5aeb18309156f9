"""The OpenAPI 3 document of a process, served at ``GET /openapi.json``.

Built with apispec and its marshmallow plugin from the schemas the server itself uses
(``schemas/requests.py`` for bodies and query strings, ``schemas/envelope.py`` for events,
``schemas/responses.py`` for answers), for the routes the process really serves.

- ``operations``: the one table of operation docs (route -> summary, body, answers, errors);
- ``examples``: the example bodies, answers, errors and events (one timeline);
- ``schema_components``, ``parameters``, ``security_schemes``, ``info``: the components;
- ``builder``: the router and the table made into the document;
- ``serving``: the route, and the per-app cache.

Wiring: ``setup_openapi(app)`` in ``create_app`` adds the route and the cache (the document is
built at the first request, when the routes are final, then served from memory).
"""

from app.web.openapi.builder import build_spec, routes_of, spec_for_app
from app.web.openapi.error_examples import ERROR_EXAMPLES
from app.web.openapi.event_examples import EVENT_EXAMPLES
from app.web.openapi.operations import OPENAPI_PATH, OPERATIONS
from app.web.openapi.schema_components import documented_schemas
from app.web.openapi.serving import OPENAPI_DOCUMENT, OpenApiDocument, setup_openapi

__all__ = [
    "ERROR_EXAMPLES",
    "EVENT_EXAMPLES",
    "OPENAPI_DOCUMENT",
    "OPENAPI_PATH",
    "OPERATIONS",
    "OpenApiDocument",
    "build_spec",
    "documented_schemas",
    "routes_of",
    "setup_openapi",
    "spec_for_app",
]
