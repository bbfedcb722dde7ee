"""Generated files from privateer's configuration schema (`privateer config schema`), run by
`just generate` and checked for drift by the CLI tests:

- charts/privateer/values.schema.json: the chart's own keys (values.schema.base.json) with
  `config` validated by the configuration schema, so a typo anywhere fails at install time;
- docs/configuration.md: every configuration key with its type, default and meaning.

usage: chart_schema.py BASE CONFIG_SCHEMA VALUES_SCHEMA_OUT CONFIGURATION_MD_OUT
"""
import json
import sys

base_path, config_path, out_path, doc_path = sys.argv[1:5]
with open(base_path) as f:
    schema = json.load(f)
with open(config_path) as f:
    config = json.load(f)
definitions = config.pop("definitions", {})
schema["definitions"] = definitions
config.pop("$schema", None)
config["description"] = "privateer's configuration file (examples/config.yaml documents every key)"
schema["properties"]["config"] = config
with open(out_path, "w") as f:
    json.dump(schema, f, indent=2, sort_keys=True)
    f.write("\n")


def resolve(node):
    """The object schema a property points at, through allOf/$ref."""
    for part in node.get("allOf", []):
        if "$ref" in part:
            return definitions[part["$ref"].split("/")[-1]]
    if "$ref" in node:
        return definitions[node["$ref"].split("/")[-1]]
    return node


def kind(node):
    target = resolve(node)
    if "enum" in target:
        return " \\| ".join(f"`{v}`" for v in target["enum"])
    t = target.get("type", "")
    if isinstance(t, list):
        t = " or ".join(x for x in t if x != "null")
    if t == "array":
        return f"list of {kind(target.get('items', {}))}"
    if t == "object" and "additionalProperties" in target and isinstance(target["additionalProperties"], dict):
        return "map"
    return t


def default_text(node):
    if "default" not in node:
        return ""
    value = node["default"]
    if isinstance(value, (dict, list)) and value:
        return ""
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else (f"`{value}`" if value else '`""`')


rows = []


def walk(node, prefix):
    target = resolve(node)
    for key, prop in target.get("properties", {}).items():
        path = f"{prefix}{key}"
        inner = resolve(prop)
        if inner.get("type") == "object" and inner.get("properties"):
            if prop.get("description") or inner.get("description"):
                rows.append((path, "section", "", (prop.get("description") or inner.get("description", "")).replace("\n", " ")))
            walk(prop, path + ".")
        else:
            rows.append((path, kind(prop), default_text(prop), prop.get("description", "").replace("\n", " ")))


walk(config, "")
with open(doc_path, "w") as f:
    f.write("# Configuration reference\n\n")
    f.write("Generated from the Rust types by `just generate` (`privateer config schema`); ")
    f.write("[`examples/config.yaml`](../examples/config.yaml) is the same with comments. ")
    f.write("Every key is optional; unknown keys are refused. In the Helm chart these are the keys under `config`.\n\n")
    f.write("| key | type | default | meaning |\n|---|---|---|---|\n")
    for path, t, default, description in rows:
        f.write(f"| `{path}` | {t} | {default} | {description} |\n")
