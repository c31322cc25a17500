#!/usr/bin/env python3
"""Cut GitHub's official REST description down to the deployment endpoints.

Usage: github-deployments-spec.py IN OUT

IN is GitHub's OpenAPI description of api.github.com as the npm package
@octokit/openapi ships it (generated/api.github.com.deref.json: every $ref already
resolved; generated/api.github.com.json works too). OUT is a self-contained OpenAPI
file with only these paths:

    /repos/{owner}/{repo}/deployments
    /repos/{owner}/{repo}/deployments/{deployment_id}
    /repos/{owner}/{repo}/deployments/{deployment_id}/statuses
    /repos/{owner}/{repo}/deployments/{deployment_id}/statuses/{status_id}

Why cut: Prism loads the whole description (13 MB with $refs, 73 MB dereferenced)
slowly and with a lot of memory, for every run of .ci/conformance-github; these four
paths are all the action calls. Nothing in the kept operations is changed: paths,
parameters, request bodies, responses, schemas and examples are copied as they are.
Any $ref left in them is kept by copying the component it names (and, in turn, the
components those name), so the file resolves on its own. The top level keeps
`openapi`, `info` and `servers` (GitHub's own, https://api.github.com: Prism's proxy
is given the emulator's URL instead) and records where the cut came from.
"""

import json
import sys

PREFIX = "/repos/{owner}/{repo}/deployments"
PATHS = [
    PREFIX,
    PREFIX + "/{deployment_id}",
    PREFIX + "/{deployment_id}/statuses",
    PREFIX + "/{deployment_id}/statuses/{status_id}",
]


def refs(node):
    """Every local $ref inside node, e.g. '#/components/schemas/deployment'."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def main(source, target):
    with open(source, encoding="utf-8") as f:
        full = json.load(f)
    paths = {p: full["paths"][p] for p in PATHS if p in full["paths"]}
    for required in PATHS[:3]:
        if required not in paths:
            sys.exit(f"{source}: no path {required}; is this GitHub's api.github.com description?")

    # Keep the components the kept operations reach, transitively.
    components, pending, seen = {}, list(refs(paths)), set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        parts = ref.split("/")
        if len(parts) != 4 or parts[:2] != ["#", "components"]:
            sys.exit(f"{source}: cannot keep {ref}: only #/components/<kind>/<name> refs are expected")
        _, _, kind, name = parts
        try:
            component = full["components"][kind][name]
        except KeyError:
            sys.exit(f"{source}: {ref} does not resolve")
        components.setdefault(kind, {})[name] = component
        pending.extend(refs(component))

    cut = {
        "openapi": full["openapi"],
        "info": full["info"],
        "servers": full.get("servers", [{"url": "https://api.github.com"}]),
        "x-cut": {
            "from": source.rsplit("/node_modules/", 1)[-1],
            "description-version": full["info"].get("version"),
            "paths": list(paths),
            "note": "Only these paths are kept, unchanged; see .ci/github-deployments-spec.py.",
        },
        "paths": paths,
    }
    if components:
        cut["components"] = components
    with open(target, "w", encoding="utf-8") as f:
        json.dump(cut, f, indent=1, sort_keys=False)
        f.write("\n")
    operations = sum(1 for p in paths.values() for m in p if m in ("get", "post", "put", "patch", "delete"))
    print(f"   kept {len(paths)} paths, {operations} operations, {sum(map(len, components.values()))} components")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
