#!/usr/bin/env python3
"""Reads the copy-paste kit (examples/) the way its consumers would, for the
tests in integration/tests/examples.rs and e2e.rs.

    examples.py check DIR   every file under DIR: parsed, and every
                            Kubernetes object in it checked against the API
                            schema; prints a JSON report, or one line per
                            problem on stderr and exits 1
    examples.py load FILE   FILE's documents as a JSON list

The API schema is the one the official Kubernetes Python client is generated
from: each model class lists its fields (attribute_map) and their types
(openapi_types). The check walks an object through those classes and refuses
what the API server would: an unknown field (kubectl's strict field
validation, the default since 1.27), a value of the wrong type, a missing
required field, an apiVersion/kind pair no API group serves.

YAML is read as YAML 1.1 (what kubectl, GitLab and GitHub read), refusing
duplicate keys, which those readers also refuse or resolve silently.
"""

import json
import pathlib
import re
import sys
import tomllib

import yaml

# The Kubernetes client takes seconds to import (thousands of models):
# only `check` needs it.
client = None

YAML_SUFFIXES = (".yml", ".yaml")
TOML_SUFFIXES = (".toml",)
DOC_SUFFIXES = (".md",)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(path):
    """The documents of one file, or None for documentation."""
    text = path.read_text(encoding="utf-8")
    if path.name.endswith(YAML_SUFFIXES):
        return list(yaml.load_all(text, Loader=StrictLoader))
    if path.name.endswith(TOML_SUFFIXES):
        return [tomllib.loads(text)]
    if path.name.endswith(DOC_SUFFIXES):
        return None
    raise ValueError(
        f"unknown kind of file (expected {', '.join(YAML_SUFFIXES + TOML_SUFFIXES + DOC_SUFFIXES)})"
    )


def check_value(value, type_name, path, errors):
    """Checks value against one openapi_types entry of the client's models."""
    # Newer clients spell containers List[X] and Dict[str, X], older ones
    # list[X] and dict(str, X).
    if type_name.startswith(("List[", "list[")):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, found {type(value).__name__}")
            return
        for i, item in enumerate(value):
            check_value(item, type_name[5:-1], f"{path}[{i}]", errors)
    elif type_name.startswith(("Dict[", "dict(")):
        inner = type_name[5:-1].split(", ", 1)[1]
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a mapping, found {type(value).__name__}")
            return
        for key, item in value.items():
            check_value(item, inner, f"{path}.{key}", errors)
    elif type_name == "object":
        pass  # int-or-string and free-form fields
    elif type_name in ("str", "datetime", "date", "bytes"):
        if not isinstance(value, str):
            errors.append(f"{path}: expected a string, found {value!r}")
    elif type_name == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected an integer, found {value!r}")
    elif type_name == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: expected a number, found {value!r}")
    elif type_name == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected true or false, found {value!r}")
    else:
        check_model(value, type_name, path, errors)


def check_model(value, type_name, path, errors):
    model = getattr(client.models, type_name)
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a {type_name} mapping, found {value!r}")
        return
    by_json_name = {json_name: attr for attr, json_name in model.attribute_map.items()}
    for key, item in value.items():
        attr = by_json_name.get(key)
        if attr is None:
            errors.append(f"{path}: unknown field {key!r} ({type_name} has no such field)")
            continue
        check_value(item, model.openapi_types[attr], f"{path}.{key}", errors)


def check_required(value, type_name, where, errors):
    """Required fields and enums, as the client's own constructors check them."""
    try:
        client.ApiClient()._ApiClient__deserialize(value, type_name)
    except (ValueError, TypeError) as e:
        errors.append(f"{where}: {' '.join(str(e).split())}")


def api_served(api_version, kind):
    """Whether an API group of the client serves kind at api_version."""
    group, _, version = api_version.rpartition("/")
    group = group.removesuffix(".k8s.io") or "core"
    api = "".join(w.capitalize() for w in group.split(".")) + version.capitalize() + "Api"
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
    cls = getattr(client, api, None)
    return cls is not None and (
        hasattr(cls, f"create_namespaced_{snake}") or hasattr(cls, f"create_{snake}")
    )


def model_name(api_version, kind):
    version = api_version.rpartition("/")[2]
    return version[0].upper() + version[1:] + kind


def pod_templates(doc, path=""):
    """Every pod template (a `template` with a `spec` with `containers`) in a
    document that is not itself a Kubernetes object: Helm values that embed
    one, such as an actions-runner-controller scale set's `template`."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            here = f"{path}.{key}" if path else key
            spec = value.get("spec") if isinstance(value, dict) else None
            if key == "template" and isinstance(spec, dict) and "containers" in spec:
                yield here, value
            else:
                yield from pod_templates(value, here)
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from pod_templates(value, f"{path}[{i}]")


def pod_specs_of_object(obj):
    """Where a Kubernetes object keeps its pod spec, if it has one."""
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        yield "spec", spec
    template = spec.get("template") if isinstance(spec, dict) else None
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        yield "spec.template.spec", template["spec"]
    job = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}) if isinstance(spec, dict) else {}
    if isinstance(job, dict) and isinstance(job.get("spec"), dict):
        yield "spec.jobTemplate.spec.template.spec", job["spec"]


def check_document(rel, n, doc, report, errors):
    where = f"{rel}: document {n}"
    if not isinstance(doc, dict):
        return
    if "apiVersion" in doc or "kind" in doc:
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            errors.append(f"{where}: a Kubernetes object needs both apiVersion and kind")
            return
        name = model_name(api_version, kind)
        if not hasattr(client.models, name) or not api_served(api_version, kind):
            errors.append(f"{where}: no API serves kind {kind} at apiVersion {api_version}")
            return
        found = []
        check_model(doc, name, f"{where} ({kind})", found)
        if not found:
            check_required(doc, name, f"{where} ({kind})", found)
        errors.extend(found)
        report["kubernetes"].append({"path": rel, "document": n, "kind": kind, "model": name})
        for at, spec in pod_specs_of_object(doc):
            report["pod_specs"].append({"path": rel, "document": n, "at": at, "spec": spec})
        return
    for at, template in pod_templates(doc):
        found = []
        check_model(template, "V1PodTemplateSpec", f"{where} ({at})", found)
        if not found:
            check_required(template, "V1PodTemplateSpec", f"{where} ({at})", found)
        errors.extend(found)
        report["pod_specs"].append({"path": rel, "document": n, "at": f"{at}.spec", "spec": template["spec"]})
    # The gitlab-runner Helm chart: the runner's config.toml as a string.
    runners = doc.get("runners")
    if isinstance(runners, dict) and isinstance(runners.get("config"), str):
        try:
            value = tomllib.loads(runners["config"])
        except tomllib.TOMLDecodeError as e:
            errors.append(f"{where}: runners.config is not TOML: {e}")
        else:
            report["embedded_toml"].append({"path": rel, "document": n, "at": "runners.config", "value": value})


def check(root):
    global client
    from kubernetes import client

    root = pathlib.Path(root)
    report = {"files": [], "kubernetes": [], "pod_specs": [], "embedded_toml": []}
    errors = []
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        errors.append(f"{root}: no files")
    for path in files:
        rel = path.relative_to(root.parent).as_posix()
        try:
            docs = load(path)
        except (ValueError, yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            errors.append(f"{rel}: {' '.join(str(e).split())}")
            continue
        report["files"].append({"path": rel, "documents": None if docs is None else len(docs)})
        for n, doc in enumerate(docs or [], start=1):
            check_document(rel, n, doc, report, errors)
    return report, errors


def main(argv):
    if len(argv) == 3 and argv[1] == "check":
        report, errors = check(argv[2])
        for e in errors:
            print(e, file=sys.stderr)
        print(json.dumps(report, default=str))
        return 1 if errors else 0
    if len(argv) == 3 and argv[1] == "load":
        docs = load(pathlib.Path(argv[2]))
        print(json.dumps(docs, default=str))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
