"""The HTTP machinery around the route tables: the request middleware and the JSON error shape,
browser protections, rate limits, metrics and the OpenAPI document."""
