#!/usr/bin/env python3
"""Validates rendered objects of custom kinds against the openAPIV3Schema of the CRDs kept in
the repository, and the CNI configuration inside each NetworkAttachmentDefinition against the
SR-IOV CNI schema. Every custom kind rendered must have a CRD here.

Usage: validate_crds.py RENDERED.yaml CRD.yaml... [--cni-schema FILE]
"""
import json
import sys

import jsonschema
import yaml

CORE_GROUPS = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "batch/v1"}


def main(argv):
    cni_schema = None
    if "--cni-schema" in argv:
        i = argv.index("--cni-schema")
        with open(argv[i + 1]) as f:
            cni_schema = json.load(f)
        argv = argv[:i] + argv[i + 2:]
    rendered, crd_files = argv[0], argv[1:]
    schemas = {}
    for path in crd_files:
        with open(path) as f:
            crd = yaml.safe_load(f)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            schemas[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]
    failed = 0
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key[0] in CORE_GROUPS or key[0] == "monitoring.coreos.com/v1":
            continue
        name = doc.get("metadata", {}).get("name")
        schema = schemas.get(key)
        if schema is None:
            print(f"FAIL {key[0]}/{key[1]} {name}: no CRD in the repository")
            failed += 1
            continue
        try:
            jsonschema.validate(doc, schema)
            if key[1] == "NetworkAttachmentDefinition" and cni_schema is not None:
                jsonschema.validate(json.loads(doc["spec"]["config"]), cni_schema)
            print(f"ok   {key[0]}/{key[1]} {name}")
        except (jsonschema.ValidationError, json.JSONDecodeError, KeyError) as e:
            msg = getattr(e, "message", str(e))
            print(f"FAIL {key[0]}/{key[1]} {name}: {msg}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
