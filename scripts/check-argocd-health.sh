#!/usr/bin/env bash
# Runs the Argo CD health check (docs/argocd-health/health.lua) against every sample in
# docs/argocd-health/samples/: each JSON file holds {"expect": <health status>, "object": <a
# ShortenerRelease>}. Lua has no JSON parser, so python3 turns each object into a Lua table
# literal, bound to `obj` as Argo CD does; the script's `hs.status` must equal `expect`.
set -euo pipefail
cd "$(dirname "$0")/.."
lua=$(command -v lua5.4 || command -v lua5.3 || command -v lua5.1 || command -v lua || true)
[[ -n $lua ]] || { echo "check-argocd-health: no Lua interpreter (scripts/install-deps.sh installs lua5.4)" >&2; exit 1; }
script=docs/argocd-health/health.lua
fail=0 n=0
for sample in docs/argocd-health/samples/*.json; do
  n=$((n + 1))
  expect=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["expect"])' "$sample")
  table=$(python3 - "$sample" <<'PY'
import json, sys
def lua(v):
    if v is None: return "nil"
    if isinstance(v, bool): return "true" if v else "false"
    if isinstance(v, (int, float)): return repr(v)
    if isinstance(v, str): return json.dumps(v)  # JSON string escapes are valid Lua
    if isinstance(v, list): return "{" + ", ".join(lua(x) for x in v) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {lua(x)}" for k, x in v.items()) + "}"
print(lua(json.load(open(sys.argv[1]))["object"]))
PY
)
  got=$("$lua" -e "obj = $table
local hs = (function() $(cat "$script")
end)()
io.write(hs.status, '\t', hs.message or '')")
  status=${got%%$'\t'*}
  if [[ $status == "$expect" ]]; then
    echo "ok   $(basename "$sample" .json): $got"
  else
    echo "FAIL $(basename "$sample" .json): expected $expect, got: $got" >&2
    fail=$((fail + 1))
  fi
done
echo "argocd health check: $((n - fail))/$n samples as expected"
((fail == 0))
