"""References (``$ref``) to the document's components: every module that points at a component
spells the pointer the same way."""


def component_path(kind: str, name: str) -> str:
    """The JSON pointer of a component, e.g. ``#/components/schemas/Session``."""
    return f"#/components/{kind}/{name}"


def ref(kind: str, name: str) -> dict[str, str]:
    """A reference object to a component."""
    return {"$ref": component_path(kind, name)}
