#!/usr/bin/env bash
# make demo: the post-incident report's story on testenv. A healthy v1; the report's bad v2
# (every create/resolve answers 500) applied while a client keeps using the service; the
# operator refuses it before it serves anyone; a fixed v3 is promoted. Prints a timeline.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NS=${DEMO_NAMESPACE:-demo}
KUBECONFIG_PATH=$ROOT/.testenv/kubeconfig
KUBECTL="$ROOT/testenv/bin/kubectl --kubeconfig $KUBECONFIG_PATH"
DEMO_DIR=$ROOT/.testenv/demo
CRD=crds/shortenerreleases.shortener.dev.yaml

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Local Kubernetes (testenv) and binaries"
make --no-print-directory cluster-up
cargo build -q -p shortener -p operator

step "Install the ShortenerRelease CRD"
$KUBECTL apply --server-side -f "$CRD" >/dev/null
$KUBECTL wait --for=condition=Established crd/shortenerreleases.shortener.dev --timeout=30s >/dev/null
if $KUBECTL get namespace "$NS" >/dev/null 2>&1; then
  $KUBECTL delete namespace "$NS" --wait=true --timeout=120s >/dev/null
fi
$KUBECTL create namespace "$NS" >/dev/null
rm -rf "$DEMO_DIR" && mkdir -p "$DEMO_DIR"

step "Start the operator (log: .testenv/demo/operator.log, metrics: http://127.0.0.1:18080/metrics)"
target/debug/operator --kubeconfig "$KUBECONFIG_PATH" --namespace "$NS" \
  --metrics-addr 127.0.0.1:18080 >"$DEMO_DIR/operator.log" 2>&1 &
OPERATOR_PID=$!
WATCH_PID=
cleanup() {
  [[ -n $WATCH_PID ]] && kill "$WATCH_PID" 2>/dev/null || true
  kill "$OPERATOR_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
until curl -fsS http://127.0.0.1:18080/readyz >/dev/null 2>&1; do
  kill -0 "$OPERATOR_PID" || { cat "$DEMO_DIR/operator.log"; exit 1; }
  sleep 0.2
done

# release IMAGE [FAULT]: applies the ShortenerRelease "web" with a shared store.
release() {
  local image=$1 fault=${2:-}
  local fault_env=""
  [[ -n $fault ]] && fault_env=$'\n    - name: SHORTENER_FAULT\n      value: '"$fault"
  $KUBECTL -n "$NS" apply -f - >/dev/null <<YAML
apiVersion: shortener.dev/v1alpha1
kind: ShortenerRelease
metadata:
  name: web
spec:
  image: $image
  replicas: 2
  env:
    - name: SHORTENER_STORE
      value: $DEMO_DIR/store.db$fault_env
  analysis:
    intervalSeconds: 1
    bakeSeconds: 10
YAML
}

# wait_jsonpath EXPR VALUE TIMEOUT
wait_jsonpath() {
  local deadline=$((SECONDS + $3))
  until [[ $($KUBECTL -n "$NS" get sr web -o "jsonpath=$1" 2>/dev/null) == "$2" ]]; do
    ((SECONDS < deadline)) || { echo "timed out waiting for $1 == $2" >&2; exit 1; }
    sleep 0.2
  done
}

step "Release v1 (shortener:v1)"
release shortener:v1
$KUBECTL -n "$NS" wait --for=condition=Ready sr/web --timeout=120s
$KUBECTL -n "$NS" get sr web

ADDR=$($KUBECTL -n "$NS" get svc web -o 'jsonpath={.spec.clusterIP}:{.spec.ports[0].port}')
# Creates need a token: the one the operator keeps for the release in its Secret.
API_TOKEN=$($KUBECTL -n "$NS" get secret web-api-token -o 'jsonpath={.data.token}' | base64 -d)
step "A user keeps creating and following short links through the active Service ($ADDR)"
# One process: the client, plus a watcher that prints every change of the release's status.
# The token goes in the environment, not on the command line where `ps` would show it.
SHORTENER_API_TOKEN=$API_TOKEN python3 -u - "$ADDR" "$KUBECTL" "$NS" "$DEMO_DIR/client.json" <<'PY' &
import http.client, json, os, subprocess, sys, threading, time
addr, kubectl, ns, out = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
host, port = addr.split(":")
t0 = time.time()
tally = {"ok": 0, "failed": 0, "first_failure": None, "last_failure": None}
lock = threading.Lock()

def stamp():
    return f"T+{time.time() - t0:6.1f}s"

def client():
    i = 0
    while True:
        i += 1
        ok = False
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=2)
            target = f"https://example.com/demo/{i}"
            c.request("POST", "/api/v1/urls", json.dumps({"url": target}),
                      {"Content-Type": "application/json",
                       "Authorization": "Bearer " + os.environ["SHORTENER_API_TOKEN"]})
            r = c.getresponse(); body = r.read()
            if r.status == 201:
                slug = json.loads(body)["slug"]
                c.request("GET", f"/{slug}"); r = c.getresponse(); r.read()
                ok = 300 <= r.status < 400 and r.getheader("Location") == target
            c.close()
        except Exception:
            ok = False
        with lock:
            if ok:
                tally["ok"] += 1
            else:
                now = time.time() - t0
                if tally["failed"] == 0:
                    print(f"{stamp()}  client: FIRST FAILED REQUEST")
                tally["failed"] += 1
                tally["first_failure"] = tally["first_failure"] or now
                tally["last_failure"] = now
            # Atomically: the demo kills this process at any moment and then reads the file.
            with open(out + ".tmp", "w") as f:
                json.dump(tally, f)
            os.replace(out + ".tmp", out)
        time.sleep(0.02)

threading.Thread(target=client, daemon=True).start()
last = None
while True:
    try:
        sr = json.loads(subprocess.run(kubectl + ["-n", ns, "get", "sr", "web", "-o", "json"],
                                       capture_output=True, text=True, check=True).stdout)
        st = sr.get("status", {})
        hist = {h["revision"]: h for h in st.get("history", [])}
        cur = hist.get(st.get("currentRevision"), {})
        key = (st.get("phase"), st.get("currentRevision"), st.get("stableRevision"))
        if key != last:
            last = key
            with lock:
                served = f"client ok={tally['ok']} failed={tally['failed']}"
            print(f"{stamp()}  phase={st.get('phase'):<11} current={st.get('currentRevision')} "
                  f"({cur.get('image', '?')}) stable={st.get('stableRevision')}  [{served}]\n"
                  f"           {st.get('message', '')}")
    except Exception as e:
        print(f"{stamp()}  watcher: {e}")
    time.sleep(0.3)
PY
WATCH_PID=$!
sleep 3

step "Release v2: the report's bug (SHORTENER_FAULT=shorten-500: every create/resolve answers 500)"
release shortener:v2 shorten-500
wait_jsonpath '{.status.history[?(@.revision==2)].outcome}' Failed 150
sleep 3

step "Timeline of v2"
$KUBECTL -n "$NS" get events --field-selector involvedObject.kind=ShortenerRelease \
  --sort-by=.metadata.creationTimestamp -o custom-columns='TIME:.eventTime,TYPE:.type,REASON:.reason,MESSAGE:.message' 2>/dev/null ||
  $KUBECTL -n "$NS" get events
PROMOTED=$($KUBECTL -n "$NS" get sr web -o 'jsonpath={.status.history[?(@.revision==2)].promotedAt}')
REASON=$($KUBECTL -n "$NS" get sr web -o 'jsonpath={.status.history[?(@.revision==2)].reason}')
STABLE=$($KUBECTL -n "$NS" get sr web -o 'jsonpath={.status.stableRevision}')
echo
echo "v2 detected as failed:   reason $REASON"
echo "v2 ever served traffic:  ${PROMOTED:+yes, from $PROMOTED}${PROMOTED:-no (never promoted)}"
echo "serving now:             revision $STABLE ($($KUBECTL -n "$NS" get sr web -o "jsonpath={.status.history[?(@.revision==$STABLE)].image}"))"
python3 -c "import json,sys; t=json.load(open(sys.argv[1])); print(f\"user requests so far:    {t['ok']+t['failed']} ({t['failed']} failed)\")" "$DEMO_DIR/client.json"

echo "SLA downtime budget:     $($KUBECTL -n "$NS" get sr web -o \
  'jsonpath={.status.budget.usedSeconds}s used of {.status.budget.allowedSeconds}s a year, {.status.budget.remainingSeconds}s remaining')"

# Capture runs after the rollback, so the excerpt's ConfigMap may follow a moment later.
deadline=$((SECONDS + 15))
EXCERPT=
until [[ -n $EXCERPT ]] || ((SECONDS >= deadline)); do
  EXCERPT=$($KUBECTL -n "$NS" get sr web -o 'jsonpath={.status.lastIncident.logExcerptRef}')
  [[ -n $EXCERPT ]] || sleep 0.5
done
if [[ -n $EXCERPT ]]; then
  step "What the on-call engineer gets: v2's error lines with context (ConfigMap $EXCERPT)"
  $KUBECTL -n "$NS" get configmap "$EXCERPT" -o 'jsonpath={.data.excerpt}' | head -n 25
fi

step "Release v3: the fix (shortener:v3)"
release shortener:v3
wait_jsonpath '{.status.history[?(@.revision==3)].outcome}' Promoted 150
wait_jsonpath '{.status.phase}' Healthy 30
sleep 2
kill "$WATCH_PID" 2>/dev/null || true
WATCH_PID=

step "Result"
$KUBECTL -n "$NS" get sr web
echo
$KUBECTL -n "$NS" get sr web -o \
  'jsonpath={range .status.history[*]}revision {.revision}  {.image}  {.outcome} {.reason}{"\n"}{end}'
python3 -c "import json,sys; t=json.load(open(sys.argv[1])); print(f\"\nuser requests: {t['ok']+t['failed']} total, {t['failed']} failed\")" "$DEMO_DIR/client.json"
echo
echo "The release stays in namespace '$NS' (operator stopped). Inspect: $KUBECTL -n $NS describe sr web"
