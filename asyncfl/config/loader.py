"""Load a scenario: safe YAML -> overrides (``--set KEY=VALUE``) -> validation -> :class:`Scenario`.

Every failure a user can cause becomes a :class:`~asyncfl.errors.ScenarioError` whose message is
one line naming the dotted key and what is allowed there.

Switching a component from the command line (``--set algorithm.name=pfedme``) drops the keys of
that mapping which only the previous choice takes -- unless they were also given with ``--set``,
in which case they are the user's intent and are validated (and rejected if unknown).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from asyncfl.config.schema import Scenario, tag_paths, tag_values, union_of
from asyncfl.errors import ScenarioError

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a scenario file with YAML *safe* loading; the top level must be a mapping."""
    p = Path(path)
    if p.is_dir():
        raise ScenarioError("", f"{p} is a directory; give a scenario YAML file")
    if not p.is_file():
        raise ScenarioError("", f"scenario file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError("", f"cannot read scenario file {p}: {exc}") from None
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        raise ScenarioError("", f"{p} is empty; a scenario names at least one key (see scenarios/quickstart.yaml)")
    return parse_yaml(text, str(p))


MAX_NODES = 100_000
"""A scenario is a few hundred values; more (after expanding YAML aliases) is a mistake or an
alias bomb, refused before anything copies it."""


class _ScenarioLoader(yaml.SafeLoader):
    """Safe loading that refuses duplicate keys (YAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _count_nodes(data: Any, limit: int) -> int:
    """Values in ``data`` with aliases expanded, counting stops past ``limit``."""
    count, stack = 0, [data]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def parse_yaml(text: str, source: str = "<string>") -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_ScenarioLoader)  # a SafeLoader subclass: safe loading
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ScenarioError("", f"malformed YAML in {source}{where}: {problem}") from None
    except RecursionError:
        raise ScenarioError("", f"{source}: nested too deeply to be a scenario") from None
    if _count_nodes(data, MAX_NODES) > MAX_NODES:
        raise ScenarioError("", f"{source}: more than {MAX_NODES:,} values (after expanding YAML aliases)")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError("", f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ScenarioError(str(bad[0]), "keys must be strings")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE parsed as a YAML scalar (``null``, ``1e-3``, ``[1, 2]``, ``true``)."""
    if "=" not in item:
        raise ScenarioError(item, "--set needs KEY=VALUE, e.g. --set server.max_staleness=8")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ScenarioError(key or item, "--set needs a dotted key such as server.lr")
    if key.count(".") > 8:
        raise ScenarioError(key[:60], "no scenario key is nested this deeply")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ScenarioError(key, f"cannot parse value {raw!r} as YAML") from None
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 as a string; users mean a number
    return key, value


def _walk_model(path: Sequence[str], data: Mapping[str, Any]) -> type[BaseModel] | None:
    """The pydantic class that a dotted path's *mapping* validates against, given current data."""
    cls: type[BaseModel] | None = Scenario
    here: Any = data
    prefix: list[str] = []
    for part in path:
        if cls is None:
            return None
        field = cls.model_fields.get(part)
        if field is None:
            return None
        prefix.append(part)
        here = here.get(part) if isinstance(here, Mapping) else None
        cls = _resolve_class(field, ".".join(prefix), here)
    return cls


def _resolve_class(field: FieldInfo, path: str, value: Any) -> type[BaseModel] | None:
    """The BaseModel class a field selects for ``value`` (tag-aware for tagged unions)."""
    union = union_of(field)
    if union is None:
        candidates = _model_classes(field.annotation)
        return candidates[0] if len(candidates) == 1 else None
    tag, candidates = union
    chosen = value.get(tag) if isinstance(value, Mapping) else value if isinstance(value, str) else None
    if chosen is None:
        return _default_class(path)
    return next((c for c in candidates if chosen in tag_values(c, tag)), None)


def _default_class(path: str) -> type[BaseModel] | None:
    default = Scenario.model_validate({})
    obj: Any = default
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return type(obj) if isinstance(obj, BaseModel) else None


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [c for a in getattr(annotation, "__args__", ()) for c in _model_classes(a)]


def allowed_keys(path: Sequence[str], data: Mapping[str, Any]) -> list[str] | None:
    """Keys allowed in the mapping at ``path`` given the data (None if not a mapping)."""
    cls = _walk_model(path, data)
    return None if cls is None else sorted(cls.model_fields)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set KEY=VALUE`` items to a raw scenario mapping (a deep copy is returned).

    A key must exist in the schema (for its mapping's current variant); switching a tag drops
    keys that only the old variant takes, except those also given with ``--set``."""
    out = _deep_copy(data)
    tags = tag_paths()
    pairs = []
    for item in overrides:
        key, value = parse_override(item)
        if key in tags and isinstance(value, str):
            key = f"{key}.{tags[key]}"  # --set data.partition=dirichlet re-tags the mapping
        pairs.append((key, value))
    cli_keys = {k for k, _ in pairs}
    for key, value in pairs:
        parts = key.split(".")
        parent_path, leaf = parts[:-1], parts[-1]
        cursor: dict[str, Any] = out
        for i, part in enumerate(parent_path):
            nxt = cursor.get(part)
            if isinstance(nxt, str) and ".".join(parts[: i + 1]) in tags:
                nxt = {tags[".".join(parts[: i + 1])]: nxt}
            if nxt is None:
                nxt = {}
            if not isinstance(nxt, dict):
                raise ScenarioError(".".join(parts[: i + 1]), f"is {type(nxt).__name__}, not a mapping; cannot set {key}")
            cursor[part] = nxt
            cursor = nxt
        cursor[leaf] = value
        tag_path = ".".join(parent_path)
        if tags.get(tag_path) == leaf:
            _prune_to_variant(out, tag_path, cli_keys)
    # Every --set key must name a real key of the final variant.
    for key, _ in pairs:
        parts = key.split(".")
        allowed = allowed_keys(parts[:-1], out)
        if allowed is None:
            continue  # the mapping's own tag is invalid or absent: validation names that
        if parts[-1] not in allowed:
            raise ScenarioError(key, f"no such key; allowed here: {', '.join(allowed)}")
    return out


def _prune_to_variant(data: dict[str, Any], path: str, cli_keys: set[str]) -> None:
    parts = path.split(".")
    cursor: Any = data
    for part in parts:
        cursor = cursor.get(part) if isinstance(cursor, dict) else None
    if not isinstance(cursor, dict):
        return
    allowed = allowed_keys(parts, data)
    if allowed is None:
        return
    for k in list(cursor):
        if k not in allowed and f"{path}.{k}" not in cli_keys:
            del cursor[k]


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj


def _fill_default_tags(data: dict[str, Any]) -> dict[str, Any]:
    """A tagged mapping given without its tag takes the default choice's tag (``data: {alpha: 1}``
    means the default data set), so partial mappings and ``--set`` into them work."""
    for path, tag in sorted(tag_paths().items(), key=lambda kv: kv[0].count(".")):
        parts = path.split(".")
        cursor: Any = data
        for part in parts:
            cursor = cursor.get(part) if isinstance(cursor, dict) else None
        if isinstance(cursor, dict) and tag not in cursor:
            cls = _walk_model(parts, data)
            default = _default_class(path) if cls is None else cls
            if default is not None:
                value = default.model_fields[tag].default
                if value is not None:
                    cursor[tag] = value
    return data


def validate(data: Mapping[str, Any]) -> Scenario:
    """Validate a raw mapping into a :class:`Scenario`, or raise a one-line ScenarioError."""
    data = _fill_default_tags(_deep_copy(dict(data)))
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise _one_line(exc, data) from None


def _one_line(exc: ValidationError, data: Mapping[str, Any]) -> ScenarioError:
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    etype = err["type"]
    path = _clean_loc(loc[:-1], data) + loc[-1:] if etype == "extra_forbidden" else _clean_loc(loc, data)
    key = ".".join(path)
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        first = msg.split(" ", 1)[0]
        if "." in first and first.split(".")[0] in Scenario.model_fields:
            return ScenarioError("", msg)  # a cross-field rule that names its keys itself
    if etype == "extra_forbidden":
        allowed = allowed_keys(path[:-1], data)
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return ScenarioError(key, f"unknown key{hint}")
    if etype == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return ScenarioError(
            f"{key}.{ctx.get('discriminator', '').strip(chr(39))}".strip("."),
            f"unknown choice {ctx.get('tag')!r}; allowed: {ctx.get('expected_tags')}",
        )
    if etype == "union_tag_not_found":
        ctx = err.get("ctx", {})
        return ScenarioError(key, f"missing {ctx.get('discriminator')}")
    if etype == "missing":
        return ScenarioError(key, "required key is missing")
    inp = err.get("input")
    shown = "" if isinstance(inp, (dict, list)) else f" (got {inp!r})"
    return ScenarioError(key, f"{msg}{shown}")


def _clean_loc(loc: list[str], data: Mapping[str, Any]) -> list[str]:
    """Drop union tags (e.g. 'fedavg' in algorithm.fedavg.lr) from a pydantic error location."""
    out: list[str] = []
    for part in loc:
        if part.startswith("function-") or part.endswith("]"):
            continue
        cls = _walk_model(out, data) if out else Scenario
        if cls is not None and part not in cls.model_fields:
            # a tag segment of a discriminated union (or a list index); keep indices
            if part.isdigit():
                out.append(part)
            continue
        out.append(part)
    return out


def load_scenario(
    source: str | Path | Mapping[str, Any], overrides: Sequence[str] = (), seed: int | None = None
) -> Scenario:
    """Scenario from a file path or a mapping, with ``--set`` overrides and an optional seed."""
    data = read_yaml(source) if isinstance(source, (str, Path)) else _deep_copy(dict(source))
    if overrides:
        data = apply_overrides(data, overrides)
    if seed is not None:
        data["seed"] = seed
    return validate(data)


def dump_scenario(scenario: Scenario) -> str:
    """The resolved scenario as YAML, every default written out; loading it gives it back."""
    return yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False, default_flow_style=False)


__all__ = ["apply_overrides", "dump_scenario", "load_scenario", "parse_override", "read_yaml", "validate"]
