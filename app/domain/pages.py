"""How long a page of a listing is: a leaf, so that the request schemas can name the bounds
without importing the store (and through it Redis and the event layouts)."""

# A page holds this many items unless the request asks for another number, at most MAX_PAGE.
DEFAULT_PAGE = 100
MAX_PAGE = 1000
