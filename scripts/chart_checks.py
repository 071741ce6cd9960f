#!/usr/bin/env python3
"""Checks of the Helm chart that helm and promtool do not do themselves.

Called by scripts/check-chart.sh; each subcommand prints what it checked and exits
non-zero with a message naming the problem.
"""
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "shortener-operator"
PREFIX = "shortener_operator_"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_RE = re.compile(r"\bshortener_operator_[a-z_]*[a-z]")


class CheckFailed(Exception):
    pass


def fail(msg):
    raise CheckFailed(msg)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs):
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    return kinds


CLAP_ARG_RE = re.compile(r"#\[arg\(([^\]]*)\)\]\s*(?:///[^\n]*\s*)*(?:pub\s+)?(\w+)\s*:")


def operator_flags():
    """Long flags of the operator's clap structs (`#[arg(long)] metrics_addr` is
    --metrics-addr), or None when no source declares any yet."""
    flags = set()
    for f in (ROOT / "operator" / "src").rglob("*.rs"):
        text = f.read_text(errors="replace")
        if "Parser" not in text:
            continue
        for attrs, field in CLAP_ARG_RE.findall(text):
            explicit = re.search(r'\blong\s*=\s*"([^"]+)"', attrs)
            if explicit:
                flags.add("--" + explicit.group(1))
            elif re.search(r"\blong\b", attrs):
                flags.add("--" + field.replace("_", "-"))
    return flags or None


def check_flags(values_set, args):
    """The operator must accept every flag the chart passes, or its pod crash-loops."""
    known = operator_flags()
    if known is None:
        print(f"  NOTE: {values_set}: no clap flags found in operator/src; flags not checked")
        return
    passed = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    unknown = sorted(passed - known)
    if unknown:
        fail(f"{values_set}: the chart passes flags the operator does not define: {unknown} "
             f"(it defines {sorted(known)})")


# Exactly what the operator calls (see the chart README); anything more fails the check,
# and the e2e install on testenv proves it is enough.
OPERATOR_RBAC = {
    ("shortener.dev", "shortenerreleases"): {"get", "list", "watch", "patch"},
    ("shortener.dev", "shortenerreleases/status"): {"get", "patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("apps", "replicasets"): {"list"},
    ("", "services"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "secrets"): {"get", "create", "patch"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
LEASE_RBAC = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}


def grants(role):
    """(apiGroup, resource) -> verbs of a Role or ClusterRole, merged over its rules."""
    out = {}
    for rule in role.get("rules", []):
        if rule.get("resourceNames") or rule.get("nonResourceURLs"):
            fail(f"{role['metadata']['name']}: unexpected resourceNames/nonResourceURLs in {rule}")
        for group in rule.get("apiGroups", []):
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def check_rendered(path, values_set, rules_out, strict_flags):
    """Structural checks of one `helm template` output; writes the rendered rules, if any."""
    docs = load_docs(path)
    kinds = by_kind(docs)
    deployments = kinds.get("Deployment", [])
    if len(deployments) != 1:
        fail(f"{values_set}: expected one Deployment, got {len(deployments)}")
    pod = deployments[0]["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        fail(f"{values_set}: pod securityContext.runAsNonRoot is not true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(f"{values_set}: pod seccompProfile is not RuntimeDefault")
    (container,) = pod["containers"]
    sc = container.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(f"{values_set}: container root filesystem is writable")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{values_set}: container allows privilege escalation")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        fail(f"{values_set}: container does not drop ALL capabilities")
    res = container.get("resources", {})
    if not res.get("requests") or not res.get("limits"):
        fail(f"{values_set}: container lacks resource requests or limits")
    probes = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, want in probes.items():
        got = container.get(probe, {}).get("httpGet", {})
        if got.get("path") != want or got.get("port") != "http-metrics":
            fail(f"{values_set}: {probe} is not GET {want} on port http-metrics: {got}")
    if not any(p.get("name") == "http-metrics" for p in container.get("ports", [])):
        fail(f"{values_set}: no container port named http-metrics")
    if strict_flags:
        check_flags(values_set, container.get("args", []))

    all_cluster_roles = kinds.get("ClusterRole", [])
    # Aggregated into Kubernetes' view/edit/admin: users' rights, bound by no one here.
    aggregated = [r for r in all_cluster_roles if any(
        k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in r["metadata"].get("labels", {}))]
    cluster_roles = [r for r in all_cluster_roles if r not in aggregated]
    roles = kinds.get("Role", [])
    lease_roles = [r for r in roles if r["metadata"]["name"].endswith("-leader-election")]
    main_roles = cluster_roles + [r for r in roles if r not in lease_roles]
    cluster_wide = values_set == "clusterwide"
    namespaces = []
    args = container.get("args", [])
    watch = [a.split("=", 1)[1] for a in args if a.startswith("--namespace=")]
    if cluster_wide:
        if len(main_roles) != 1 or main_roles[0]["kind"] != "ClusterRole" or watch:
            fail(f"{values_set}: expected one ClusterRole and no --namespace, got "
                 f"{[r['kind'] for r in main_roles]}, {watch}")
    else:
        if cluster_roles:
            fail(f"{values_set}: a namespaced install creates an operator ClusterRole")
        namespaces = sorted(r["metadata"]["namespace"] for r in main_roles)
        if len(watch) != 1 or sorted(watch[0].split(",")) != namespaces:
            fail(f"{values_set}: --namespace {watch} does not match the Roles' namespaces {namespaces}")
        bindings = sorted(b["metadata"]["namespace"] for b in kinds.get("RoleBinding", [])
                          if not b["metadata"]["name"].endswith("-leader-election"))
        if bindings != namespaces:
            fail(f"{values_set}: RoleBindings in {bindings}, Roles in {namespaces}")
    if values_set == "namespaced" and namespaces != ["team-a", "team-b"]:
        fail(f"{values_set}: expected Roles in team-a and team-b, got {namespaces}")
    if values_set == "default":
        if namespaces != ["shortener-system"]:
            fail(f"default: expected one Role in the release namespace, got {namespaces}")
        if deployments[0]["spec"]["replicas"] != 2 or "--leader-elect" not in args:
            fail("default: expected 2 replicas with --leader-elect")
        if len(kinds.get("PodDisruptionBudget", [])) != 1:
            fail("default: expected a PodDisruptionBudget")
        if not pod.get("topologySpreadConstraints"):
            fail("default: expected topologySpreadConstraints")
        if len(aggregated) != 2:
            fail(f"default: expected the view and edit aggregated ClusterRoles, got {len(aggregated)}")
    want_aggregated = {
        "view": ({"view", "edit", "admin"}, {("shortener.dev", "shortenerreleases"): {"get", "list", "watch"},
                                             ("shortener.dev", "shortenerreleases/status"): {"get", "list", "watch"},
                                             ("shortener.dev", "shortenerreleases/scale"): {"get", "list", "watch"}}),
        "edit": ({"edit", "admin"}, {("shortener.dev", "shortenerreleases"):
                                     {"create", "update", "patch", "delete", "deletecollection"},
                                     ("shortener.dev", "shortenerreleases/scale"): {"update", "patch"}}),
    }
    for role in aggregated:
        kind = role["metadata"]["name"].rsplit("-", 1)[-1]
        to = {k.rsplit("-", 1)[-1] for k, v in role["metadata"]["labels"].items()
              if k.startswith("rbac.authorization.k8s.io/aggregate-to-") and v == "true"}
        if kind not in want_aggregated or (to, grants(role)) != want_aggregated[kind]:
            fail(f"{values_set}: aggregated ClusterRole {role['metadata']['name']}: to {sorted(to)}, "
                 f"grants {grants(role)}")
    for role, want in [(r, OPERATOR_RBAC) for r in main_roles] + [(r, LEASE_RBAC) for r in lease_roles]:
        got = grants(role)
        if got != want:
            diff = []
            for key in sorted(set(got) | set(want)):
                extra = got.get(key, set()) - want.get(key, set())
                missing = want.get(key, set()) - got.get(key, set())
                if extra or missing:
                    diff.append(f"{key[0] or 'core'}/{key[1]}: extra {sorted(extra)}, missing {sorted(missing)}")
            fail(f"{values_set}: {role['kind']} {role['metadata']['name']} is not least privilege: "
                 + "; ".join(diff))
    if values_set == "namespaced" and all_cluster_roles:
        fail(f"{values_set}: a namespace-scoped install without aggregated roles still creates a ClusterRole")

    summary = ", ".join(f"{k} x{len(v)}" for k, v in sorted(kinds.items()))
    rules = kinds.get("PrometheusRule", [])
    if rules:
        (rule,) = rules
        source = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
        if rule["spec"] != source:
            fail(f"{values_set}: the PrometheusRule differs from files/prometheus-rules.yaml")
        with open(rules_out, "w") as f:
            yaml.safe_dump(rule["spec"], f, sort_keys=False)
    dashboards = [
        c for c in kinds.get("ConfigMap", []) if c["metadata"].get("labels", {}).get("grafana_dashboard")
    ]
    for cm in dashboards:
        for key, text in cm["data"].items():
            json.loads(text)
    print(f"  {values_set}: {summary}")


def contract_metrics():
    """Metric names and types from the table in docs/contracts.md."""
    text = (ROOT / "docs" / "contracts.md").read_text()
    found = {}
    for name, kind in re.findall(r"^\|\s*`(shortener_operator_[a-z_]+)`\s*\|\s*([a-z]+)", text, re.M):
        found[name] = kind
    if not found:
        fail("docs/contracts.md lists no shortener_operator_ metrics")
    return found


PREFIX_BINDING_RE = re.compile(r'let\s+(\w+)\s*(?::\s*&str\s*)?=\s*"(shortener_operator_)";')


def source_metrics():
    """(names, histogram names) the operator's source defines, or None before it has a
    metrics module. Names are literal (`"shortener_operator_x"`) or built from a bound prefix
    (`let p = "shortener_operator_"; format!("{p}x")`). Test modules are left out, since
    they spell series names (`..._count`), not metric names. A name is a histogram when
    `Histogram` is written between it and the name before it."""
    src = ROOT / "operator" / "src"
    module = [src / "metrics.rs", src / "metrics"]
    if not any(p.exists() for p in module):
        return None
    names, histograms = set(), set()
    for f in sorted(src.rglob("*.rs")):
        text = f.read_text(errors="replace").split("#[cfg(test)]")[0]
        patterns = [METRIC_RE.pattern]
        for ident, _ in PREFIX_BINDING_RE.findall(text):
            patterns.append(r"\{" + re.escape(ident) + r"\}([a-z_]*[a-z])")
        found = []
        for pat in patterns:
            for m in re.finditer(pat, text):
                name = m.group() if m.lastindex is None else PREFIX + m.group(1)
                found.append((m.start(), m.end(), name))
        found.sort()
        prev_end = 0
        for start, end, name in found:
            names.add(name)
            if "Histogram" in text[max(prev_end, start - 400) : start]:
                histograms.add(name)
            prev_end = end
    if not names:
        fail(
            "operator/src has a metrics module but no shortener_operator_* names this check "
            "can read; spell them as literals or as format!(\"{p}name\") with a bound prefix"
        )
    return names, histograms


def used_metrics():
    uses = {}
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query", "definition") and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dashboard)
    if not exprs:
        fail("the dashboard has no queries")
    for e in exprs:
        for m in METRIC_RE.findall(e):
            uses.setdefault(m, set()).add("dashboard")
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for m in METRIC_RE.findall(rule["expr"]):
                uses.setdefault(m, set()).add(f"alert {rule.get('alert', rule.get('record'))}")
    return uses


def check_metrics():
    contract = contract_metrics()
    source = source_metrics()
    if source is None:
        print("  NOTE: operator/src has no metrics module yet: cross-checking against docs/contracts.md")
        known = set(contract)
        histograms = {n for n, k in contract.items() if k == "histogram"}
    else:
        known, histograms = source
        print(f"  operator/src registers {len(known)} metric names ({len(histograms)} histograms)")
        missing = sorted(set(contract) - known)
        if missing:
            fail(f"metrics in docs/contracts.md but not in operator/src: {missing}")
        histograms |= {n for n, k in contract.items() if k == "histogram"}
    uses = used_metrics()
    unknown, bases_used = [], set()
    for name, where in sorted(uses.items()):
        base = name
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in histograms:
                base = name[: -len(suffix)]
        bases_used.add(base)
        if base not in known:
            unknown.append(f"{name} (in {', '.join(sorted(where))})")
    if unknown:
        fail("metric names the operator does not register:\n    " + "\n    ".join(unknown))
    print(f"  {len(uses)} metric names used by the dashboard and rules, all known")
    unused = sorted(n for n in contract if n not in bases_used)
    if unused:
        print(f"  (not shown anywhere: {', '.join(unused)})")


DASHBOARD_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": ".*",
    "$release": ".*",
}
REQUIRED_PANELS = [
    "releases by phase",
    "rollbacks",
    "incidents",
    "time to restore",
    "budget remaining",
    "reconcile rate",
    "reconcile latency",
    "reconcile error",
]


def dashboard_queries(dashboard):
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def check_dashboard(prom_url=None):
    """The dashboard's structure; with a Prometheus URL, every query is also parsed there."""
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    for key in ("uid", "title", "schemaVersion", "panels", "templating"):
        if key not in dashboard:
            fail(f"dashboard has no {key}")
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    if len(ids) != len(set(ids)):
        fail("dashboard panel ids are not unique")
    cells = {}
    for p in panels:
        g = p["gridPos"]
        if g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24:
            fail(f"panel '{p['title']}' does not fit the 24-column grid: {g}")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    fail(f"panels '{cells[(x, y)]}' and '{p['title']}' overlap")
                cells[(x, y)] = p["title"]
        if p["type"] != "row":
            if not p.get("targets"):
                fail(f"panel '{p['title']}' has no queries")
            if p.get("datasource", {}).get("uid") != "${datasource}":
                fail(f"panel '{p['title']}' does not use the $datasource variable")
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    for title, expr in dashboard_queries(dashboard):
        for var in re.findall(r"\$(\w+)", expr):
            if not var.startswith("__") and var not in defined:
                fail(f"panel '{title}' uses undefined variable ${var}")
    titles = " | ".join(p["title"].lower() for p in panels)
    missing = [t for t in REQUIRED_PANELS if t not in titles]
    if missing:
        fail(f"dashboard lacks panels for: {missing}")
    queries = dashboard_queries(dashboard)
    if prom_url:
        import urllib.error
        import urllib.parse
        import urllib.request

        for title, expr in queries:
            for var, value in DASHBOARD_VARS.items():
                expr = expr.replace(var, value)
            query = urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(f"{prom_url}/api/v1/query?{query}", timeout=10) as r:
                    json.load(r)
            except urllib.error.HTTPError as e:
                fail(f"panel '{title}': Prometheus rejects {expr!r}: {e.read().decode(errors='replace')}")
        print(f"  {len(panels)} panels, {len(queries)} queries, all accepted by Prometheus")
    else:
        print(f"  {len(panels)} panels, {len(queries)} queries, layout and variables consistent")


def values_paths(node, prefix=""):
    paths = set()
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{prefix}.{k}" if prefix else k
            paths.add(p)
            paths |= values_paths(v, p)
    return paths


def check_values_doc():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = re.findall(r"^\|\s*`([A-Za-z0-9_.]+)`\s*\|", readme, re.M)
    if not documented:
        fail("charts/shortener-operator/README.md has no values table")
    paths = values_paths(values)
    stale = sorted(d for d in documented if d not in paths)
    if stale:
        fail(f"README documents values that values.yaml does not have: {stale}")
    tops = {d.split(".")[0] for d in documented}
    undocumented = sorted(k for k in values if k not in tops)
    if undocumented:
        fail(f"top-level values not documented in the chart README: {undocumented}")
    schema = json.loads((CHART / "values.schema.json").read_text())
    unschema = sorted(k for k in values if k not in schema.get("properties", {}))
    if unschema:
        fail(f"top-level values missing from values.schema.json: {unschema}")
    print(f"  {len(values)} top-level values, {len(documented)} README rows, all consistent")


def serve_file(path, port_file):
    """Serves FILE as /metrics on a free loopback port (written to PORT_FILE): a stand-in
    operator whose counters a test changes by rewriting FILE."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pathlib.Path(path).read_bytes()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    pathlib.Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    try:
        if cmd == "rendered":
            check_rendered(argv[2], argv[3], argv[4], strict_flags=len(argv) > 5 and argv[5] == "--check-flags")
        elif cmd == "metrics":
            check_metrics()
        elif cmd == "dashboard":
            check_dashboard(argv[2] if len(argv) > 2 else None)
        elif cmd == "serve-file":
            serve_file(argv[2], argv[3])
        elif cmd == "values-doc":
            check_values_doc()
        else:
            print("usage: chart_checks.py rendered FILE NAME RULES_OUT [--check-flags] | metrics | dashboard [PROM_URL] | values-doc", file=sys.stderr)
            return 2
    except CheckFailed as e:
        print(f"  FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
