-- Argo CD health check for shortener.dev/ShortenerRelease.
-- Install it in argocd-cm under resource.customizations.health.shortener.dev_ShortenerRelease
-- (README: "Argo CD"). Tested by scripts/check-argocd-health.sh against samples/*.json.
--
-- A status is trusted only once status.observedGeneration equals metadata.generation:
-- until the operator has seen the latest spec, its phase is the previous rollout's.
hs = {}
local generation = obj.metadata and obj.metadata.generation
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the release"
  return hs
end
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local message = status.message or ""
local phase = status.phase
if phase == "Healthy" then
  hs.status = "Healthy"
elseif phase == "Pending" or phase == "Progressing" or phase == "Analyzing" then
  hs.status = "Progressing"
elseif phase == "RolledBack" or phase == "Degraded" then
  -- RolledBack: the spec's revision failed; the stable one serves. Degraded: nothing
  -- healthy serves. Either way the desired release is not running.
  hs.status = "Degraded"
elseif phase == "Blocked" or phase == "Paused" then
  -- Waiting for something outside the release: a promotion gate, the SLA budget, or
  -- the shortener.dev/paused annotation.
  hs.status = "Suspended"
else
  hs.status = "Unknown"
end
hs.message = phase .. ": " .. message
return hs
