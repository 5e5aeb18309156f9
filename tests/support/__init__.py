"""What the tests (and the benchmark) share: the harness that starts real processes
(``processes``, ``redis_server``, ``redis_cluster``), the API client (``api``), the SSE client
(``sse``) and the readers built on it (``readers``), bounded waiting (``wait``), the checks of
what streams deliver (``checks``), the names the product may give Redis (``redis_names``), the
hand-off scenario (``handoff``) and the broker and store helpers more than one test module uses
(``broker``, ``store``). No test module imports another test module."""
