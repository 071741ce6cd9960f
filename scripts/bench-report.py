#!/usr/bin/env python3
"""Turns bench-results/recovery.json and operator-cost.json (written by operator/tests/bench.rs)
into bench-results/summary.md and one PNG timeline per failure kind (timeline-<kind>.png).

Usage: bench-report.py [DIR]   (default bench-results). Needs matplotlib (the venv that
scripts/bench-cluster.sh creates).
"""
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SYSTEMS = ["operator", "deployment-readyz", "deployment-healthz"]
LABELS = {
    "operator": "operator (ours)",
    "deployment-readyz": "Deployment, readiness /readyz",
    "deployment-healthz": "Deployment, /healthz only",
}


def quantile(values, q):
    """Nearest-rank quantile of a non-empty list (small samples: no interpolation)."""
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))]


def stat(runs, key, censor):
    """(median, p95, censored?) of runs[key]; None (never happened in the window) counts as
    `censor` and is marked, so a median that is a censored value reads '> window'."""
    vals = [r[key] if r[key] is not None else censor for r in runs]
    if not vals:
        return None
    med, p95 = quantile(vals, 0.5), quantile(vals, 0.95)
    return med, p95, med >= censor, p95 >= censor


def fmt_s(s, censor_ms, never=None):
    """Seconds; a censored value reads `> window`, or `never` when given (detection: the
    system never declared the release failed)."""
    if s is None:
        return "–"
    med, p95, cm, cp = s

    def one(v, c):
        if c:
            return never or f"> {censor_ms / 1000:.0f}"
        return f"{v / 1000:.1f}"

    return f"{one(med, cm)} / {one(p95, cp)}"


def ratio(base, ours, unit=""):
    if base is None or ours is None:
        return "–"
    if ours == 0:
        return "both 0" if base == 0 else f"∞ (ours 0, theirs {base:g}{unit})"
    return f"{base / ours:.1f}×"


def recovery(dir_, out):
    path = os.path.join(dir_, "recovery.json")
    if not os.path.exists(path):
        return None
    doc = json.load(open(path))
    st = doc["settings"]
    window_ms = st["window_s"] * 1000
    m = doc["machine"]
    kinds = [k for k in doc["kinds"] if any(r["kind"] == k["name"] for r in doc["runs"])]
    out.append("## Recovery: what a release costs users\n")
    out.append(
        f"{m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB; load average at start "
        f"`{m['loadavg_at_start']}`, at end `{m.get('loadavg_at_end', '?')}` (the machine was "
        f"shared with other builds, so absolute times are pessimistic; the three systems ran "
        f"side by side, at the same moments, so the ratios are fair). Operator and shortener: "
        f"**{m['build']}** builds (testenv runs `target/debug/shortener`). "
        f"{st['reps']} repetitions per kind; run took {doc['duration_s'] / 60:.1f} min.\n"
    )
    out.append(
        f"Load: one create-and-follow pair (POST /api/v1/urls, then GET the slug) every "
        f"{st['arrival_ms']} ms through the Service, open loop, each call timing out after "
        f"{st['call_timeout_ms']} ms; a pair fails on any error or when it takes over "
        f"{st['slo_ms']} ms. Each release is watched for {st['window_s']} s, or until it "
        f"has settled and served {st['tail_s']} s without a failure. Both sides use a progress deadline of "
        f"{st['progress_deadline_s']} s; the operator bakes {st['operator_analysis']['bakeSeconds']} s "
        f"(analysis every second, max error rate {st['operator_analysis']['maxErrorRate']} %, "
        f"max p99 {st['operator_analysis']['maxLatencyP99Ms']} ms).\n"
    )
    out.append(
        "Figures are **median / p95** over the repetitions. *failed*: failed pairs from the "
        "moment the release was applied. *detect*: release applied → the system declares it "
        "failed (operator: revision Failed; Deployment: `ProgressDeadlineExceeded`, which "
        "rolls nothing back; `never`: not within the window). *restore*: first failed pair → last failed pair, when the run "
        "ended with working traffic (0: no failure; `> window`: still failing at the end). "
        "*settle*: release applied → steady state (operator: Healthy or RolledBack; "
        "Deployment: rollout complete; `> window`: stuck).\n"
    )
    out.append("| kind | system | failed of requests | detect s | restore s | settle s | outcomes |")
    out.append("|---|---|---|---|---|---|---|")
    summary = {}
    for k in kinds:
        for sysname in SYSTEMS:
            runs = [r for r in doc["runs"] if r["kind"] == k["name"] and r["system"] == sysname]
            if not runs:
                continue
            failed = [r["failed"] for r in runs]
            reqs = [r["requests"] for r in runs]
            restore = stat(runs, "restore_ms", window_ms)
            summary[(k["name"], sysname)] = {
                "failed": quantile(failed, 0.5),
                "restore": restore[0] if restore else None,
            }
            outcomes = sorted({r["outcome"] for r in runs})
            out.append(
                f"| {k['name']} | {LABELS[sysname]} | {quantile(failed, 0.5)} / {quantile(failed, 0.95)}"
                f" of {quantile(reqs, 0.5)} | {fmt_s(stat(runs, 'detect_ms', window_ms), window_ms, 'never')}"
                f" | {fmt_s(restore, window_ms)} | {fmt_s(stat(runs, 'settle_ms', window_ms), window_ms)}"
                f" | {', '.join(outcomes)} |"
            )
    out.append("")
    out.append("### Baselines as a ratio to the operator (median failed requests; median restore time)\n")
    out.append("| kind | failed: Deployment /readyz ÷ ours | failed: /healthz only ÷ ours | restore: /readyz ÷ ours | restore: /healthz ÷ ours |")
    out.append("|---|---|---|---|---|")
    for k in kinds:
        o = summary.get((k["name"], "operator"))
        a = summary.get((k["name"], "deployment-readyz"))
        b = summary.get((k["name"], "deployment-healthz"))
        if not (o and a and b):
            continue

        def rr(x):
            # A censored restore (still failing at the end) is at least the window.
            return None if x["restore"] is None else x["restore"] / 1000

        out.append(
            f"| {k['name']} | {ratio(a['failed'], o['failed'])} | {ratio(b['failed'], o['failed'])}"
            f" | {ratio(rr(a), rr(o), ' s')} | {ratio(rr(b), rr(o), ' s')} |"
        )
    out.append(
        f"\nA restore ratio counts a run still failing at the end as {st['window_s']} s, "
        "so it is a lower bound there. Argo Rollouts is not compared: building its controller "
        "from the Go module proxy (a large k8s.io dependency tree) did not fit this run's "
        "budget on 2 shared cores, and with its documented defaults (blue-green, "
        "`autoPromotionEnabled: true`, no AnalysisTemplate) it promotes on readiness alone, so "
        "for the kinds whose probes pass it would fail like the `/readyz` Deployment.\n"
    )
    out.append("Kinds:\n")
    for k in kinds:
        fault = f"`SHORTENER_FAULT={k['fault']}`" if k["fault"] else "no fault"
        out.append(f"- `{k['name']}`: `{k['image']}`, {fault}: {k['what']}")
    out.append("")
    for k in kinds:
        png = timeline(dir_, doc, k["name"])
        if png:
            out.append(f"![{k['name']}]({png})")
    out.append("")
    return doc


def timeline(dir_, doc, kind):
    runs = {
        r["system"]: r
        for r in doc["runs"]
        if r["kind"] == kind and r["rep"] == 0 and r.get("timeline")
    }
    if not runs:
        return None
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 2.3 * len(runs)), sharex=True, squeeze=False)
    for ax, sysname in zip(axes[:, 0], [s for s in SYSTEMS if s in runs]):
        r = runs[sysname]
        t = r["timeline"]
        xs = [(t["start_ms"] + 100 * i) / 1000 for i in range(len(t["ok"]))]
        ax.bar(xs, t["ok"], width=0.1, align="edge", color="#2e7d32", label="ok")
        ax.bar(xs, t["failed"], width=0.1, align="edge", bottom=t["ok"], color="#c62828", label="failed")
        top = max([a + b for a, b in zip(t["ok"], t["failed"])] or [1])
        for i, e in enumerate(r["events"]):
            x = e["at_ms"] / 1000
            ax.axvline(x, color="#1565c0", lw=0.8, ls="--")
            ax.text(x, top * (0.95 - 0.16 * (i % 5)), " " + e["event"], fontsize=7, color="#1565c0", va="top")
        ax.set_ylim(0, top * 1.05 + 0.5)
        ax.set_ylabel("pairs / 100 ms")
        ax.set_title(
            f"{LABELS[sysname]}: {r['failed']} of {r['requests']} failed ({r['outcome']})",
            fontsize=9,
            loc="left",
        )
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds from the release being applied")
    fig.suptitle(f"release kind: {kind}", fontsize=11)
    fig.tight_layout()
    name = f"timeline-{kind}.png"
    fig.savefig(os.path.join(dir_, name), dpi=90)
    plt.close(fig)
    return name


def cost(dir_, out):
    path = os.path.join(dir_, "operator-cost.json")
    if not os.path.exists(path):
        return
    doc = json.load(open(path))
    m = doc["machine"]
    out.append("## What the operator costs\n")
    out.append(
        f"One operator process ({m['build']} build) watching one namespace of paused "
        "ShortenerReleases (`shortener.dev/paused: \"true\"`: reconciled, no pods), on "
        f"{m['cpus']} shared CPUs (load average `{m['loadavg_at_start']}` at start). *create*: "
        "the releases are applied (16 at a time) until all are reconciled; *idle*: nothing "
        "changes; *churn*: every release's spec changes once, until all are reconciled again. "
        "CPU is the process's user+system time over the stretch; reconcile latency from its "
        "`shortener_operator_reconcile_duration_seconds` histogram (bucket deltas, "
        "interpolated); API requests from its `shortener_operator_kube_requests_total` "
        "(every request its client sends, watches included). Reconciles are counted when they "
        "start and timed when they end, so a stretch's quantiles can include reconciles begun "
        "in the one before; the histogram's top finite bucket is 5 s (`≥ 5000`).\n"
    )
    out.append("| releases | stretch | s | CPU % of a core | RSS MiB (peak) | reconciles | API requests | per reconcile | reconcile p50 ms | p99 ms |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")

    def f(v):
        return "–" if v is None else f"{v:g}"

    def ms(v):
        # The histogram's top finite bucket is 5 s: a quantile there only says "at least".
        if v is not None and v >= 5000:
            return "≥ 5000"
        return f(v)

    for r in doc["rows"]:
        out.append(
            f"| {r['releases']} | {r['phase']} | {r['seconds']:g} | {r['cpu_percent_of_one_core']:g}"
            f" | {r['rss_mib']:g} ({r['peak_rss_mib']:g}) | {r['reconciles']:g} | {r['kube_requests']:g}"
            f" | {f(r['kube_requests_per_reconcile'])} | {ms(r['reconcile_p50_ms'])} | {ms(r['reconcile_p99_ms'])} |"
        )
    out.append("")


def main():
    dir_ = sys.argv[1] if len(sys.argv) > 1 else "bench-results"
    out = [
        "# Benchmarks on testenv: bad releases and the operator's own cost\n",
        "Written by `make bench` (`scripts/bench-cluster.sh`: `operator/tests/bench.rs`, then "
        "`scripts/bench-report.py`) from `recovery.json` and `operator-cost.json` here.\n",
    ]
    recovery(dir_, out)
    cost(dir_, out)
    with open(os.path.join(dir_, "summary.md"), "w") as fh:
        fh.write("\n".join(out) + "\n")
    print(f"wrote {os.path.join(dir_, 'summary.md')}")


if __name__ == "__main__":
    main()
