"""Write charts/privateer/values.schema.json: the chart's own keys (values.schema.base.json)
with `config` validated by privateer's configuration schema (`privateer config schema`), so a
typo anywhere in the values fails at install time. Run by `just generate`."""
import json
import sys

base_path, config_path, out_path = sys.argv[1:4]
with open(base_path) as f:
    schema = json.load(f)
with open(config_path) as f:
    config = json.load(f)
schema["definitions"] = config.pop("definitions", {})
config.pop("$schema", None)
config["description"] = "privateer's configuration file (examples/config.yaml documents every key)"
schema["properties"]["config"] = config
with open(out_path, "w") as f:
    json.dump(schema, f, indent=2, sort_keys=True)
    f.write("\n")
