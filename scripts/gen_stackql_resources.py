"""Write src/dicomql/provider/_stackql.py: StackQL's resource → method → SQL-verb mapping.

Reads ``components.x-stackQL-resources`` of StackQL's provider document for google.healthcare
(stackql-provider-registry) and keeps the resources dicomql serves: datasets, operations,
locations and everything DICOM. Each method is keyed by HTTP method and flat path so the
registry can join it to Google's discovery document, which stays the authority on parameters
and schemas.

Usage: python scripts/gen_stackql_resources.py [/path/to/stackql-healthcare.yaml]
"""

from __future__ import annotations

import pprint
import subprocess
import sys
from pathlib import Path

import yaml

DEFAULT_SOURCE = Path("/work/shared/reference/stackql-healthcare.yaml")
TARGET = Path(__file__).resolve().parents[1] / "src" / "dicomql" / "provider" / "_stackql.py"

# Resources outside DICOM (FHIR, HL7v2, consent, NLP) are not served by dicomql.
SKIPPED_PATH_WORDS = ("fhirStores", "hl7V2Stores", "consentStores", "dataMapperWorkspaces", "nlp")
SKIPPED_RESOURCE_WORDS = ("fhir", "hl7", "consent", "nlp", "data_mapper", "user_data")


def _unref(pointer: str) -> tuple[str, str]:
    """'#/paths/~1v1~1projects…/get' → ('v1/projects…', 'GET')."""
    _, _, rest = pointer.partition("#/paths/")
    path, _, verb = rest.rpartition("/")
    return path.replace("~1", "/").replace("~0", "~").lstrip("/"), verb.upper()


def build(source: Path) -> dict[str, dict[str, object]]:
    doc = yaml.safe_load(source.read_text())
    resources: dict[str, dict[str, object]] = {}
    for name, resource in sorted(doc["components"]["x-stackQL-resources"].items()):
        if any(word in name for word in SKIPPED_RESOURCE_WORDS):
            continue
        methods: dict[str, dict[str, str | None]] = {}
        for method_name, method in sorted(resource["methods"].items()):
            path, http_method = _unref(method["operation"]["$ref"])
            if any(word in path for word in SKIPPED_PATH_WORDS):
                continue
            object_key = method.get("response", {}).get("objectKey")
            methods[method_name] = {
                "http_method": http_method,
                "flat_path": path,
                "object_key": object_key.removeprefix("$.") if object_key else None,
            }
        if not methods:
            continue
        sql_verbs = {
            verb: [ref["$ref"].rsplit("/", 1)[1] for ref in refs]
            for verb, refs in sorted(resource.get("sqlVerbs", {}).items())
            if refs
        }
        sql_verbs = {verb: [m for m in names if m in methods] for verb, names in sql_verbs.items()}
        resources[name] = {
            "title": resource.get("title", name),
            "methods": methods,
            "sql_verbs": {verb: names for verb, names in sql_verbs.items() if names},
        }
    return resources


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    resources = build(source)
    text = (
        '"""StackQL\'s resource, method and SQL-verb mapping for google.healthcare (generated).\n\n'
        "Written by scripts/gen_stackql_resources.py from stackql-healthcare.yaml; do not edit.\n"
        '"""\n\n'
        "from __future__ import annotations\n\n"
        "from typing import Any\n\n"
        f"RESOURCES: dict[str, dict[str, Any]] = {pprint.pformat(resources, width=100)}\n"
    )
    TARGET.write_text(text)
    # Keep the generated module in the project's format (ruff is a test dependency).
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(TARGET)], check=True)
    print(f"wrote {TARGET} ({len(resources)} resources)")


if __name__ == "__main__":
    main()
