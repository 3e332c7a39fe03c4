#!/usr/bin/env python3
"""Dashboard queries against Prometheus.

  check_dashboards.py rules DASHBOARD... > rules.yml
      every panel expression as a recording rule, for `promtool check rules` (syntax).
  check_dashboards.py live PROM_URL DASHBOARD...
      every metric name used must exist in the live Prometheus, and every expression must
      return at least one series.
"""
import json
import re
import sys
import urllib.parse
import urllib.request

SUBST = {"$__rate_interval": "1m", "$instance": ".*", "${datasource}": ""}


def rule_exprs(paths):
    import yaml
    for p in paths:
        with open(p) as f:
            for g in yaml.safe_load(f)["groups"]:
                for r in g["rules"]:
                    yield p, r.get("alert") or r.get("record"), r["expr"]


def exprs(paths):
    for p in paths:
        if p.endswith((".yml", ".yaml")):
            continue
        with open(p) as f:
            board = json.load(f)
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                e = t["expr"]
                for k, v in SUBST.items():
                    e = e.replace(k, v)
                yield p, panel["title"], e


def query(prom, q):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(body)
    return body["data"]["result"]


def main(argv):
    mode = argv[0]
    if mode == "rules":
        print("groups:\n  - name: dashboards\n    rules:")
        for i, (_, _, e) in enumerate(exprs(argv[1:])):
            print(f"      - record: dashboard:expr{i}\n        expr: {json.dumps(e)}")
        return 0
    prom, failed = argv[1], 0
    names = set()
    all_exprs = list(exprs(argv[2:]))
    rules = [p for p in argv[2:] if p.endswith((".yml", ".yaml"))]
    # Alert expressions are normally empty; their metric names must still exist.
    for _, _, e in all_exprs + list(rule_exprs(rules)):
        names.update(re.findall(r"\b(zcproxy_[a-z0-9_]+)", e))
    for n in sorted(names):
        base = re.sub(r"_(bucket|count|sum)$", "", n)
        found = query(prom, f'count({{__name__=~"{n}|{base}_bucket"}})')
        if not found:
            print(f"FAIL metric {n}: not exported by the running binaries")
            failed += 1
    for path, title, e in all_exprs:
        if not query(prom, e):
            print(f"FAIL {path} / {title}: no series for {e}")
            failed += 1
    print(f"{len(names)} metric names, {len(all_exprs)} dashboard expressions checked live, {failed} failures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
