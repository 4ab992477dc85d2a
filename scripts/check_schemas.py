"""Validate every shipped workflow against schemas/workflow.schema.json.

Uses ruamel.yaml (YAML 1.2, like the engine: `on:` stays a string) and the
`jsonschema` package, so a mistake in our own validator cannot hide a schema
that rejects our own examples.
"""
import json
import pathlib
import sys

import jsonschema
from ruamel.yaml import YAML

root = pathlib.Path(__file__).resolve().parent.parent
schema = json.loads((root / "schemas" / "workflow.schema.json").read_text())
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
yaml = YAML(typ="safe", pure=True)

files = sorted(
    p for d in ("examples", "workflows") for p in (root / d).rglob("*.y*ml")
)
bad = 0
for path in files:
    doc = yaml.load(path.read_text())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        where = "/".join(str(x) for x in e.path) or "(top)"
        print(f"{path.relative_to(root)}: {where}: {e.message}", file=sys.stderr)
    bad += bool(errors)
print(f"schema check: {len(files) - bad} passed, {bad} failed")
sys.exit(1 if bad or not files else 0)
