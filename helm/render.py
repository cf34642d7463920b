#!/usr/bin/env python3
"""Render helm/berth offline, as `helm template` does, with the Helm library itself.

Uses the PyPI package helm-python-sdk (Helm's Go SDK behind a C ABI, loaded with ctypes: no
helm binary, no cluster, no network) and PyYAML. Prints the rendered objects as one JSON array
of {"template", "object"} (NOTES.txt left out); a template error exits 1 with Helm's message.

    python3 helm/render.py helm/berth [VALUES.yaml] [--name REL] [--namespace NS]
"""
import argparse
import json
import sys

import helm_python as helm
import yaml


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("chart")
    p.add_argument("values", nargs="?")
    p.add_argument("--name", default="rel")
    p.add_argument("--namespace", default="berth")
    a = p.parse_args()
    values = {}
    if a.values:
        with open(a.values) as f:
            values = yaml.safe_load(f) or {}
    try:
        with helm.Chart.load(a.chart) as c:
            out = c.render(values=values, name=a.name, namespace=a.namespace, is_install=True)
    except Exception as e:  # HelmRenderError, HelmValuesError: Helm's own message
        print(f"render failed: {e}", file=sys.stderr)
        return 1
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                docs.append({"template": path, "object": d})
    print(json.dumps(docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
