"""Validate rendered Kubernetes objects the way an API server would.

``validate_object(obj)`` returns a list of problems (empty when the object is
valid); ``assert_valid(objs)`` fails a test with every problem of every object.

* Custom resources are checked against the CustomResourceDefinitions copied
  from upstream (``$GPUFLEET_UPSTREAM/crds``, default ``<repo>/../shared/upstream``):
  the version must be served, the object must match that version's
  ``openAPIV3Schema`` with unknown fields rejected (kubectl's default strict
  field validation), and the schema's ``x-kubernetes-validations`` CEL rules
  are evaluated with cel-python after schema defaults are applied (rules that
  compare with ``oldSelf`` only apply to updates and are skipped; a rule
  cel-python cannot evaluate is skipped rather than guessed).
* Core objects are checked against the Kubernetes OpenAPI schemas shipped by
  kubernetes-validate for :data:`KUBERNETES_VERSION`, in strict mode.
* For both: ``metadata`` must be a valid ObjectMeta with a DNS-1123 name and
  well-formed label keys and values; namespaced kinds must carry
  ``metadata.namespace`` (a bundle applied without one would land in
  whatever namespace the applier defaults to), cluster-scoped kinds must not.
* An object whose kind has neither a CRD nor a core schema is a problem, so a
  typo in ``apiVersion`` cannot pass unchecked.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[1]
KUBERNETES_VERSION = "1.33"  # the fleet's clusters (stacks/); kubernetes-validate ships its schemas

# Core kinds that are cluster-scoped (everything else in the core schemas is namespaced).
CLUSTER_SCOPED_CORE = {
    "Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "PriorityClass",
    "StorageClass", "CSIDriver", "CSINode", "VolumeAttachment", "RuntimeClass", "IngressClass",
    "CustomResourceDefinition", "APIService", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration", "FlowSchema", "PriorityLevelConfiguration", "CertificateSigningRequest",
    "DeviceClass", "ComponentStatus",
}

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def upstream_dir() -> Path:
    return Path(os.environ.get("GPUFLEET_UPSTREAM") or REPO.parent / "shared" / "upstream")


# ------------------------------------------------------------------------ CRDs


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that reads YAML's '=' value tag as the plain string '='."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


_HEADER = re.compile(r"^spec:\n  group: (?P<group>\S+)\n  names:\n(?:    .*\n)*?    kind: (?P<kind>\S+)\n", re.M)


def _read_crds(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [d for d in yaml.load_all(fh, Loader=_Loader) if d and d.get("kind") == "CustomResourceDefinition"]


@lru_cache(maxsize=1)
def _crd_index() -> dict[tuple[str, str], Path]:
    """(group, kind) -> the file defining it, read from each file's header only."""
    crd_dir = upstream_dir() / "crds"
    if not crd_dir.is_dir():
        raise FileNotFoundError(f"{crd_dir}: upstream CRDs not found; set GPUFLEET_UPSTREAM to the folder holding crds/")
    out: dict[tuple[str, str], Path] = {}
    for path in sorted(crd_dir.glob("*.y*ml")):
        with path.open() as fh:
            head = fh.read(4096)
        m = _HEADER.search(head)
        if m:
            out[(m["group"], m["kind"])] = path
        else:  # unusual layout: parse the whole file
            for doc in _read_crds(path):
                out[(doc["spec"]["group"], doc["spec"]["names"]["kind"])] = path
    return out


@lru_cache(maxsize=None)
def _crd(group: str, kind: str) -> dict[str, Any] | None:
    """{"scope": ..., "versions": {name: (served, schema)}} for one CRD, or None."""
    path = _crd_index().get((group, kind))
    if path is None:
        return None
    for doc in _read_crds(path):
        spec = doc["spec"]
        if (spec["group"], spec["names"]["kind"]) == (group, kind):
            versions = {v["name"]: (bool(v.get("served")), v.get("schema", {}).get("openAPIV3Schema", {})) for v in spec["versions"]}
            return {"scope": spec["scope"], "versions": versions}
    return None


_INLINE_FLAGS = re.compile(r"\(\?([ims]+)\)")


def _python_regex(pattern: str) -> str:
    """Go's RE2 accepts inline flags anywhere (``^(?i)[a-z]``); Python wants them first."""
    flags = "".join(sorted(set("".join(_INLINE_FLAGS.findall(pattern)))))
    return f"(?{flags})" + _INLINE_FLAGS.sub("", pattern) if flags else pattern


def _strict(schema: dict[str, Any], root: bool = False) -> dict[str, Any]:
    """An OpenAPI v3 structural schema as JSON Schema, unknown fields rejected."""
    s = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-") and k not in ("nullable", "default")}
    if isinstance(s.get("pattern"), str):
        s["pattern"] = _python_regex(s["pattern"])
    if schema.get("nullable") and "type" in s:
        s["type"] = [s["type"], "null"]
    if "properties" in schema:
        props = {k: _strict(v) for k, v in schema["properties"].items()}
        if root or schema.get("x-kubernetes-embedded-resource"):
            props["metadata"] = {"type": "object"}  # checked separately, against ObjectMeta
        s["properties"] = props
    if isinstance(schema.get("additionalProperties"), dict):
        s["additionalProperties"] = _strict(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        s["items"] = _strict(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            s[key] = [_strict(x) for x in schema[key]]
    if "not" in schema:
        s["not"] = _strict(schema["not"])
    open_ = schema.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in schema
    if schema.get("type") == "object" and "properties" in schema and not open_:
        allowed = set(schema["properties"])
        if root or schema.get("x-kubernetes-embedded-resource"):
            allowed |= {"apiVersion", "kind", "metadata"}
        s["additionalProperties"] = False
        s["properties"] = {**{k: {} for k in allowed}, **s["properties"]}
    return s


@lru_cache(maxsize=None)
def _crd_validator(group: str, kind: str, version: str) -> jsonschema.protocols.Validator:
    schema = _crd(group, kind)["versions"][version][1]  # type: ignore[index]
    return jsonschema.Draft202012Validator(_strict(schema, root=True))


def _apply_defaults(schema: dict[str, Any], value: Any) -> None:
    """Fill schema defaults in place, as the API server does before validating."""
    if isinstance(value, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, v in value.items():
                if name not in (schema.get("properties") or {}):
                    _apply_defaults(extra, v)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _apply_defaults(schema["items"], item)


@lru_cache(maxsize=None)
def _cel_program(rule: str):
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_rules(schema: dict[str, Any], value: Any, path: str, errors: list[str]) -> None:
    """Evaluate every x-kubernetes-validations rule that applies to ``value``."""
    import celpy

    for rule in schema.get("x-kubernetes-validations") or []:
        expr = rule.get("rule", "")
        if "oldSelf" in expr:
            continue  # transition rule: only meaningful on update
        try:
            result = _cel_program(expr).evaluate({"self": celpy.json_to_cel(value)})
        except Exception as exc:  # noqa: BLE001
            # The API server rejects an object when a rule reads a field that is
            # absent; any other failure is cel-python lacking a Kubernetes CEL
            # library function, which is no verdict on the object.
            reason = str(exc.args[0]) if exc.args else ""
            if reason.startswith(("no such member", "no such key")):
                errors.append(f"{path or '<root>'}: {rule.get('message') or expr} ({reason})")
            continue
        if isinstance(result, bool) and not result:
            errors.append(f"{path or '<root>'}: {rule.get('message') or 'failed rule: ' + expr}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for name, v in value.items():
            if name in props:
                _cel_rules(props[name], v, f"{path}.{name}" if path else name, errors)
            elif isinstance(schema.get("additionalProperties"), dict):
                _cel_rules(schema["additionalProperties"], v, f"{path}.{name}" if path else name, errors)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _cel_rules(schema["items"], item, f"{path}[{i}]", errors)


# ------------------------------------------------------------------- core objects


@lru_cache(maxsize=1)
def _core_registry() -> tuple[Path, Registry]:
    import importlib.resources

    base = Path(str(importlib.resources.files("kubernetes_validate"))) / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}.0-local-strict"
    if not base.is_dir():
        raise FileNotFoundError(f"kubernetes-validate ships no schemas for Kubernetes {KUBERNETES_VERSION}")
    import json

    defs = json.loads((base / "_definitions.json").read_text())
    return base, Resource.from_contents(defs) @ Registry()


@lru_cache(maxsize=None)
def _core_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    import json

    base, registry = _core_registry()
    # rbac.authorization.k8s.io/v1 -> rbac-v1; v1 -> v1 (kubernetes-validate's file naming)
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = base / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@lru_cache(maxsize=1)
def _object_meta_validator() -> jsonschema.protocols.Validator:
    _, registry = _core_registry()
    ref = {"$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    return jsonschema.Draft202012Validator(ref, registry=registry)


# ------------------------------------------------------------------------- API


def _where(err: jsonschema.ValidationError) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err.absolute_path).replace(".[", "[") or "<root>"


def _metadata_problems(obj: dict[str, Any], namespaced: bool) -> list[str]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: required mapping is missing"]
    errors = [f"metadata.{_where(e)}: {e.message}" for e in _object_meta_validator().iter_errors(meta)]
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        errors.append("metadata.name: required")
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        errors.append(f"metadata.name: '{name}' is not a DNS-1123 subdomain")
    ns = meta.get("namespace")
    if namespaced and not ns:
        errors.append(f"metadata.namespace: {obj.get('kind')} is namespaced; set the namespace explicitly")
    if not namespaced and ns:
        errors.append(f"metadata.namespace: {obj.get('kind')} is cluster-scoped and takes no namespace")
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = str(key).rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix))) or len(label) > 63 or not _LABEL_NAME.match(label):
            errors.append(f"metadata.labels: '{key}' is not a valid label key")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            errors.append(f"metadata.labels.{key}: {value!r} is not a valid label value")
    return errors


def validate_object(obj: dict[str, Any]) -> list[str]:
    """Every problem with one Kubernetes object (an empty list when it is valid)."""
    if not isinstance(obj, dict):
        return [f"not a mapping: {type(obj).__name__}"]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        return ["apiVersion and kind are required strings"]
    group, _, version = api_version.rpartition("/")
    crd = _crd(group, kind)
    if crd is not None:
        if version not in crd["versions"]:
            return [f"apiVersion: {kind} has no version {version} (CRD versions: {', '.join(crd['versions'])})"]
        served, schema = crd["versions"][version]
        if not served:
            return [f"apiVersion: {group}/{version} {kind} is not served"]
        errors = [f"{_where(e)}: {e.message}" for e in _crd_validator(group, kind, version).iter_errors(obj)]
        errors += _metadata_problems(obj, crd["scope"] == "Namespaced")
        if not errors:
            defaulted = copy.deepcopy(obj)
            _apply_defaults(schema, defaulted)
            _cel_rules(schema, defaulted, "", errors)
        return errors
    validator = _core_validator(api_version, kind)
    if validator is None:
        return [f"apiVersion/kind: no schema for {api_version} {kind} (neither a CRD in {upstream_dir() / 'crds'} nor a Kubernetes {KUBERNETES_VERSION} kind)"]
    errors = [f"{_where(e)}: {e.message}" for e in validator.iter_errors(obj)]
    errors += _metadata_problems(obj, kind not in CLUSTER_SCOPED_CORE)
    return errors


def describe(obj: Any) -> str:
    if not isinstance(obj, dict):
        return repr(obj)[:60]
    meta = obj.get("metadata") or {}
    ns = f"{meta.get('namespace')}/" if isinstance(meta, dict) and meta.get("namespace") else ""
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{obj.get('apiVersion')} {obj.get('kind')} {ns}{name}"


def assert_valid(objs: Iterable[dict[str, Any]] | dict[str, Any]) -> None:
    """Fail with every problem of every object; also fails on an empty list."""
    if isinstance(objs, dict):
        objs = [objs]
    objs = list(objs)
    assert objs, "no objects to validate"
    report = []
    for obj in objs:
        for problem in validate_object(obj):
            report.append(f"{describe(obj)}: {problem}")
    assert not report, f"{len(report)} schema problem(s):\n" + "\n".join(report)
