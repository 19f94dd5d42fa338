"""Argo CD's side of a custom health check, for tests: the Lua script run as Argo CD
runs it, in Lua 5.1 (Argo CD embeds gopher-lua, a Lua 5.1), with the resource as the
global ``obj`` decoded from its JSON, and only the libraries Argo CD opens for health
scripts (base, table, string, math: no io, no os)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lupa import lua51

REPO = Path(__file__).resolve().parents[2]
HEALTH_LUA = REPO / "pipelines" / "argocd" / "modeldeployment-health.lua"
# what Argo CD's health statuses are (gitops-engine's health.HealthStatusCode)
STATUSES = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})

_SANDBOX = """
local source, obj = ...
local env = {obj = obj}
for _, name in ipairs({"ipairs", "pairs", "next", "select", "tonumber", "tostring", "type",
                       "error", "pcall", "assert", "unpack", "rawget", "rawequal"}) do
  env[name] = _G[name]
end
env.string, env.table, env.math = string, table, math
local chunk, err = loadstring(source, "=modeldeployment-health.lua")
if chunk == nil then error(err) end
setfenv(chunk, env)
local hs = chunk()
return hs.status, hs.message
"""


@dataclass(frozen=True)
class Health:
    status: str
    message: str


def _to_lua(lua: Any, value: Any) -> Any:
    """JSON values as gopher-lua decodes them: objects and arrays as tables (arrays from
    1), null as nil (an absent key), numbers as Lua numbers."""
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def health(resource: dict[str, Any], script: Path = HEALTH_LUA) -> Health:
    """The health Argo CD shows for ``resource`` (a ModelDeployment as the API server
    returns it): the script's ``hs.status`` and ``hs.message``. A script error raises
    ``lupa.lua51.LuaError``; a status Argo CD does not know fails an assertion."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    decoded = json.loads(json.dumps(resource))  # what crosses the wire, nothing more
    status, message = lua.execute(_SANDBOX, script.read_text(), _to_lua(lua, decoded))
    assert status in STATUSES, f"not an Argo CD health status: {status!r}"
    assert isinstance(message, str) and message, "a health check must say why"
    return Health(status, message)
