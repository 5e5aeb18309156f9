"""Bots that answer customers: --bot rules|openai|webhook."""
