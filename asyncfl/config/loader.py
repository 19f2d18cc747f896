"""Load a scenario: safe YAML -> overrides (``--set KEY=VALUE``) -> validation -> :class:`Scenario`.

Every failure a user can cause becomes a :class:`~asyncfl.errors.ScenarioError` whose message is
one line naming the dotted key and what is allowed there.

YAML is read safely, as YAML 1.2 reads numbers (``2.0e6`` and ``1e-3`` are floats; PyYAML's YAML 1.1
leaves them strings), without duplicate keys, and within limits checked before anything expands:
a file of at most MAX_FILE_BYTES, at most MAX_NODES values (YAML aliases expanded) nested at most
MAX_DEPTH deep; a ``--set``/``--grid`` value of at most MAX_VALUE_CHARS characters and
MAX_VALUE_NODES values. Types are strict (see :class:`asyncfl.config.schema.Strict`).

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

from asyncfl.config.schema import Scenario, tag_paths, tag_values, tagged_fields, union_of
from asyncfl.errors import ScenarioError

MAX_FILE_BYTES = 1 << 20
"""Largest scenario file read (1 MiB; the shipped ones are under 4 KiB): a bigger file is refused
before parsing, so parsing it cannot take long."""

MAX_VALUE_CHARS = 16_384
"""Longest ``--set``/``--grid`` value text."""

MAX_NODES = 100_000
"""A scenario is a few hundred values; more (after expanding YAML aliases) is a mistake or an
alias bomb, refused before anything copies it. Applies to files and to ``--set``/``--grid`` values."""

MAX_KEY_CHARS = 200
"""Longest dotted key of ``--set``/``--grid``."""

MAX_VALUE_NODES = 10_000
"""Most values in one ``--set``/``--grid`` value, YAML aliases expanded (a per-client list of
10,000 clients fits)."""

MAX_DEPTH = 32
"""Deepest nesting of lists and mappings (a scenario nests about 6 deep)."""


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a scenario file with YAML *safe* loading; the top level must be a mapping."""
    p = Path(path)
    if p.is_dir():
        raise ScenarioError("", f"{p} is a directory; give a scenario YAML file")
    if not p.is_file():
        raise ScenarioError("", f"scenario file not found: {p}")
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise ScenarioError("", f"{p}: larger than {MAX_FILE_BYTES:,} bytes; a scenario file is a few KiB")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError("", f"cannot read scenario file {p}: {exc}") from None
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        raise ScenarioError("", f"{p} is empty; a scenario names at least one key (see scenarios/quickstart.yaml)")
    return parse_yaml(text, str(p))


_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built


class _ScenarioLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loading that refuses duplicate keys (YAML would silently keep the last one) and reads
    floats as YAML 1.2 does: YAML 1.1 (PyYAML) takes ``2.0e6`` and ``1e-3`` for strings, which no
    one writing a scenario means; here they are the floats 2000000.0 and 0.001."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_ScenarioLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


class ScenarioDumper(yaml.SafeDumper):
    """Safe dumping that knows the loader's floats: a *string* such as ``1e-3`` is quoted, so that
    what is written reads back as the same value."""


ScenarioDumper.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def count_values(data: Any, limit: int = MAX_NODES) -> int:
    """Values in ``data`` with YAML aliases expanded (a shared list counts at every use); counting
    stops past ``limit``, so a billion-value alias bomb costs no more than ``limit`` steps."""
    count, stack = 0, [data]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _check_size(data: Any, source: str, limit: int = MAX_NODES) -> None:
    """Refuse more than ``limit`` values (aliases expanded) or nesting deeper than MAX_DEPTH; one
    walk that stops at the limit."""
    count, stack = 0, [(data, 1)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > limit:
            raise ScenarioError("", f"{source}: more than {limit:,} values (after expanding YAML aliases)")
        if depth > MAX_DEPTH:
            raise ScenarioError("", f"{source}: nested too deeply to be a scenario (more than {MAX_DEPTH} levels)")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _load_yaml(text: str, source: str, limit: int = MAX_NODES) -> Any:
    try:
        data = yaml.load(text, Loader=_ScenarioLoader)  # a SafeLoader subclass: safe loading
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if "nesting depth" in problem:  # libyaml's own limit (1000 levels)
            raise ScenarioError("", f"{source}: nested too deeply to be a scenario") from None
        raise ScenarioError("", f"malformed YAML in {source}{where}: {problem}") from None
    except RecursionError:
        raise ScenarioError("", f"{source}: nested too deeply to be a scenario") from None
    _check_size(data, source, limit)
    return data


def parse_yaml(text: str, source: str = "<string>") -> dict[str, Any]:
    """A scenario mapping from YAML text, with the loader and limits of :func:`read_yaml`."""
    data = _load_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError("", f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ScenarioError(str(bad[0]), "keys must be strings")
    return data


def parse_value(key: str, raw: str, option: str = "--set") -> Any:
    """One ``--set``/``--grid`` value: YAML with the scenario loader (floats as YAML 1.2, no
    duplicate keys), at most MAX_VALUE_CHARS characters and MAX_VALUE_NODES values (aliases
    expanded) nested at most MAX_DEPTH deep."""
    if len(raw) > MAX_VALUE_CHARS:
        raise ScenarioError(key, f"{option} value longer than {MAX_VALUE_CHARS:,} characters")
    if not raw.strip():
        return None
    try:
        return _load_yaml(raw, f"{option} value", MAX_VALUE_NODES)
    except ScenarioError as exc:
        if str(exc).startswith("malformed YAML"):
            raise ScenarioError(key, f"cannot parse value {raw[:80]!r} as YAML") from None
        raise ScenarioError(key, str(exc)) from None


def parse_override(item: str, option: str = "--set") -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE parsed as a YAML scalar (``null``, ``1e-3``, ``[1, 2]``, ``true``)."""
    if "=" not in item:
        raise ScenarioError(item[:60], f"{option} needs KEY=VALUE, e.g. {option} server.max_staleness=8")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ScenarioError(key[:60] or item[:60], f"{option} needs a dotted key such as server.lr")
    if len(key) > MAX_KEY_CHARS:
        raise ScenarioError(key[:60], f"no scenario key is longer than {MAX_KEY_CHARS} characters")
    if key.count(".") > 8:
        raise ScenarioError(key[:60], "no scenario key is nested this deeply")
    return key, parse_value(key, raw, option)


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
                raise ScenarioError(
                    ".".join(parts[: i + 1]), f"is {type(nxt).__name__}, not a mapping; cannot set {key}"
                )
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


def validate(data: Mapping[str, Any]) -> Scenario:
    """Validate a raw mapping into a :class:`Scenario`, or raise a one-line ScenarioError."""
    data = _deep_copy(dict(data))
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
    if etype in _EXPECTED:
        return ScenarioError(key, f"expected {_expected(etype, path, data)}, got {_kind(inp)}{_hint(etype, inp)}")
    shown = "" if isinstance(inp, (dict, list)) else f" (got {inp!r})"
    return ScenarioError(key, f"{msg}{shown}")


_EXPECTED = {
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
"""pydantic's strict type errors -> what the key takes, in a scenario file's words."""


def _expected(etype: str, path: list[str], data: Mapping[str, Any]) -> str:
    what = _EXPECTED[etype]
    if what == "a mapping" and path:
        parent = _walk_model(path[:-1], data) if len(path) > 1 else Scenario
        spec = tagged_fields(parent).get(path[-1]) if parent is not None else None
        if spec is not None:
            what = ("a mapping, a number >= 0" if spec.takes_number else "a mapping") + " or one of "
            what += ", ".join(spec.bare_tags)
    return what


def _kind(value: Any) -> str:
    """A YAML value as 'a boolean (true)', 'a string ('0.05')', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:60]!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _hint(etype: str, value: Any) -> str:
    if etype in ("float_type", "int_type") and isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        if _YAML12_FLOAT.match(value.strip()):
            return "; a YAML 1.1 reader (yaml.safe_load) leaves 1e-3 a string: read files with asyncfl's read_yaml"
        return "; write numbers without quotes"
    return ""


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
    if isinstance(source, (str, Path)):
        data = read_yaml(source)
    else:
        if count_values(source, MAX_NODES) > MAX_NODES:  # the file limit, before copying anything
            raise ScenarioError("", f"scenario mapping: more than {MAX_NODES:,} values")
        data = _deep_copy(dict(source))
    if overrides:
        data = apply_overrides(data, overrides)
    if seed is not None:
        data["seed"] = seed
    return validate(data)


def dump_scenario(scenario: Scenario) -> str:
    """The resolved scenario as YAML, every default written out; loading it gives it back."""
    return yaml.dump(scenario.model_dump(mode="json"), Dumper=ScenarioDumper, sort_keys=False, default_flow_style=False)


__all__ = [
    "ScenarioDumper",
    "apply_overrides",
    "count_values",
    "dump_scenario",
    "load_scenario",
    "parse_override",
    "parse_value",
    "read_yaml",
    "validate",
]
