-- Argo CD health of a shipway.io/ModelDeployment, from the status the Shipway operator
-- writes (operators/README.md, "Status"). Installed as
-- resource.customizations.health.shipway.io_ModelDeployment in argocd-cm
-- (argocd-cm-patch.yaml beside this file). Lua 5.1, as Argo CD runs it: `obj` is the
-- resource; the result is hs.status (Healthy, Progressing, Degraded, Suspended) and
-- hs.message.
--
--   Progressing  the operator has not written a status for the latest generation yet
--                (status.observedGeneration < metadata.generation, as Argo CD's own
--                Deployment check); a rollout runs (the candidate's weight, or its
--                replicas being added before it takes more traffic); stable not ready yet
--   Degraded     condition Degraded=True: a rollout rolled back (RolloutRolledBack) or
--                failed (RolloutFailed), the spec could not be applied (InvalidSpec,
--                ObjectRefused, NameConflict, RoutingUnsupported), the stable Deployment
--                failed (ProgressDeadlineExceeded, ReplicaFailure); or phase Failed
--   Suspended    the running rollout is paused (annotation shipway.io/paused) or waits at
--                an approval gate (annotation shipway.io/approved-step)
--   Healthy      condition Ready=True and no rollout running: stable serves the spec

local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local function number(value)
  if value == nil then
    return 0
  end
  return tonumber(value) or 0
end

local status = obj.status
local generation = number(obj.metadata and obj.metadata.generation)
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Shipway operator to reconcile generation " .. generation
  return hs
end
if number(status.observedGeneration) < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Shipway operator: generation " .. generation
    .. " not observed yet (status is of generation " .. number(status.observedGeneration) .. ")"
  return hs
end

local degraded = condition(status, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded, "Degraded")
  return hs
end
if status.phase == "Failed" or status.phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = "phase " .. status.phase
  return hs
end

local progressing = condition(status, "Progressing")
local rollout = status.rollout or {}
local running = status.candidateBuild ~= nil
  or (progressing ~= nil and progressing.status == "True")
if running and rollout.finished ~= true then
  local candidate = (status.candidateBuild or {}).id or rollout.candidateBuildID or "?"
  local weights = status.weights or {}
  local state = rollout.state or {}
  local weight = number(weights.candidate)
  if rollout.phase == "Paused" then
    hs.status = "Suspended"
    hs.message = "Rollout of build " .. candidate .. " paused at " .. weight
      .. " % (annotation shipway.io/paused)"
    return hs
  end
  if rollout.phase == "WaitingGate" then
    hs.status = "Suspended"
    hs.message = "Rollout of build " .. candidate .. " waits for approval at step "
      .. number(state.step) .. " (" .. weight .. " %): annotate shipway.io/approved-step"
    return hs
  end
  hs.status = "Progressing"
  local ahead = number((status.capacity or {}).candidate)
  if ahead > weight then
    hs.message = "Rollout of build " .. candidate .. " at " .. weight
      .. " %: candidate replicas being added for " .. ahead .. " % before it takes more"
  else
    hs.message = "Rollout of build " .. candidate .. " ("
      .. (rollout.phase or "Initializing") .. ") at " .. weight .. " %"
  end
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the stable build's replicas")
return hs
