"""The `@actor` decorator: marks the function a script actor runs and
carries its metadata (Reflow component metadata).

Both forms users write are accepted::

    @actor(name="Multiplier", inports=["input"], outports=["output"], tags=["math"])
    async def process(context): ...

    @actor({"component": "Multiplier", "inports": ["input"], "outports": ["output"]})
    def process(context): ...

The function's docstring is the description unless one is given. Ports are
names or dicts ``{"name": ..., "type": ..., "required": ...}``; inports are
required and outports untyped (``any``) by default, as Reflow has them.
Mistakes (unknown keys, duplicate ports, wrong types) raise `ActorError`
at decoration time, naming the key.
"""

import inspect

__all__ = ["actor", "ActorError", "ActorMetadata", "find_actor"]

_KEYS = {"name", "component", "description", "inports", "outports", "tags", "config"}


class ActorError(Exception):
    """A script's actor definition is wrong."""


class ActorMetadata:
    __slots__ = ("component", "description", "inports", "outports", "tags", "config")

    def __init__(self, component, description, inports, outports, tags, config):
        self.component, self.description = component, description
        self.inports, self.outports = inports, outports
        self.tags, self.config = tags, config

    def to_dict(self):
        return {
            "component": self.component,
            "description": self.description,
            "inports": [dict(p) for p in self.inports],
            "outports": [dict(p) for p in self.outports],
            "tags": list(self.tags),
            "config": dict(self.config),
        }

    def outport_names(self):
        return [p["name"] for p in self.outports]


def _ports(value, key, required):
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ActorError(f'@actor: "{key}" must be a list of port names')
    ports, seen = [], set()
    for item in value:
        if isinstance(item, str):
            port = {"name": item, "type": "any"}
        elif isinstance(item, dict) and isinstance(item.get("name"), str):
            unknown = set(item) - {"name", "type", "required", "description"}
            if unknown:
                raise ActorError(f'@actor: {key} port "{item["name"]}" has unknown keys {sorted(unknown)}')
            port = {"name": item["name"], "type": str(item.get("type", "any"))}
            if "description" in item:
                port["description"] = str(item["description"])
            if "required" in item:
                port["required"] = bool(item["required"])
        else:
            raise ActorError(f'@actor: every entry of "{key}" must be a name or {{"name": ...}}, not {item!r}')
        if not port["name"]:
            raise ActorError(f'@actor: an entry of "{key}" has an empty name')
        if port["name"] in seen:
            raise ActorError(f'@actor: {key[:-1]} "{port["name"]}" listed twice')
        seen.add(port["name"])
        if required:
            port.setdefault("required", True)
        ports.append(port)
    return ports


def _metadata(fields, fn):
    unknown = set(fields) - _KEYS
    if unknown:
        raise ActorError(f"@actor: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    if "name" in fields and "component" in fields and fields["name"] != fields["component"]:
        raise ActorError('@actor: give "name" or "component", not two different ones')
    component = fields.get("component", fields.get("name")) or fn.__name__
    if not isinstance(component, str):
        raise ActorError('@actor: "name"/"component" must be a string')
    description = fields.get("description")
    if description is None:
        description = inspect.getdoc(fn) or ""
    if not isinstance(description, str):
        raise ActorError('@actor: "description" must be a string')
    tags = fields.get("tags") or []
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise ActorError('@actor: "tags" must be a list of strings')
    config = fields.get("config") or {}
    if not isinstance(config, dict):
        raise ActorError('@actor: "config" must be a dict of defaults')
    return ActorMetadata(
        component,
        description,
        _ports(fields.get("inports"), "inports", True),
        _ports(fields.get("outports"), "outports", False),
        list(tags),
        dict(config),
    )


def actor(spec=None, **fields):
    """Marks `fn` as the script's actor (see the module docs)."""
    if callable(spec) and not fields:
        # Bare `@actor`.
        return actor()(spec)
    if spec is not None:
        if not isinstance(spec, dict):
            raise ActorError("@actor takes a dict or keyword arguments")
        if fields:
            raise ActorError("@actor takes a dict or keyword arguments, not both")
        fields = dict(spec)

    def mark(fn):
        if not callable(fn):
            raise ActorError("@actor must decorate a function")
        params = inspect.signature(fn).parameters
        if len(params) != 1:
            raise ActorError(f"@actor: {fn.__name__} must take exactly one argument (the context)")
        fn.__actor_metadata__ = _metadata(fields, fn)
        return fn

    return mark


def find_actor(namespace):
    """The one function marked with `@actor` in a script's namespace."""
    found = [v for v in namespace.values() if callable(v) and hasattr(v, "__actor_metadata__")]
    if not found:
        raise ActorError("the script defines no function decorated with @actor")
    if len(found) > 1:
        names = ", ".join(sorted(f.__name__ for f in found))
        raise ActorError(f"the script defines several @actor functions ({names}); keep one")
    return found[0]
