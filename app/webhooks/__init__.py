"""Outbound webhooks (--webhook-url): conversation lifecycle events, written with the change
that causes them into a delivery queue in Redis, and delivered from there (docs/webhooks.md)."""
