#!/usr/bin/env python3
"""Asserts what `cores` must change in a rendered chart: the shard count in zcproxy.toml, the
data plane's CPU requests = limits (whole cores), memory and hugepages (from values), and
that requests equal limits for every resource (Guaranteed QoS).

Usage: assert_render.py RENDERED.yaml CORES BASE_MI PER_CORE_MI HUGE_PER_CORE_MI
"""
import re
import sys

import yaml


def main(path, cores, base_mi, per_core_mi, huge_per_core_mi):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    cm = next(d for (k, n), d in by.items() if k == "ConfigMap" and n.endswith("-dataplane"))
    toml = cm["data"]["zcproxy.toml"]
    m = re.search(r"^cores = (\d+)$", toml, re.M)
    assert m and int(m.group(1)) == cores, f"zcproxy.toml cores: {m and m.group(1)} != {cores}"
    dep = next(d for (k, n), d in by.items() if k == "Deployment" and n.endswith("-dataplane"))
    c = dep["spec"]["template"]["spec"]["containers"][0]
    req, lim = c["resources"]["requests"], c["resources"]["limits"]
    assert req == lim, f"requests != limits: {req} vs {lim}"
    assert req["cpu"] == str(cores), f"cpu {req['cpu']} != {cores}"
    want_mem = f"{base_mi + per_core_mi * cores}Mi"
    assert req["memory"] == want_mem, f"memory {req['memory']} != {want_mem}"
    huge = [k for k in req if k.startswith("hugepages-")]
    assert huge, "no hugepages request"
    assert req[huge[0]] == f"{huge_per_core_mi * cores}Mi", f"{huge[0]} {req[huge[0]]}"
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = int(re.search(r"^drain_secs = (\d+)$", toml, re.M).group(1))
    assert grace > drain, f"grace {grace} <= drain {drain}"
    print(f"ok   cores={cores}: toml, cpu {req['cpu']}, memory {req['memory']}, {huge[0]} {req[huge[0]]}, requests = limits")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], *map(int, a[1:]))
