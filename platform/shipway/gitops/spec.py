"""``shipway.yaml``: parse and validate a release spec, naming the field and line of
every error (pure: text in, a typed spec or ``InvalidInput`` out).

The YAML is composed into PyYAML's node tree first, so every key keeps the line it was
written on; duplicate keys are refused there (PyYAML's loader would keep the last one
silently), and so are aliases (``*name``): each would be walked again wherever it
appears, so a few hundred bytes of nested aliases (a "billion laughs") would hold the
API or a worker for minutes. The tree is then validated by pydantic models that forbid
unknown fields and reuse the API's own constraints (names, recipes, targets, build options, replica
ranges; ``shipway.api.schemas``), then by the rules that span fields, which are the
services' own (``recipes.parse``, ``BuildOptions``, the rollout codec, the drift
``Policy``). Field names are camelCase at the YAML level, as the ModelDeployment CRD's.

An error reads ``shipway.yaml line 12: builds[0].recipe: 'int9' is not one of fp32,
fp16, int8, int8-dynamic``; several are reported together, one a line, by line.
"""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, ValidationError
from pydantic.alias_generators import to_camel
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from shipway.api.schemas import NAME_PATTERN, URL_PATTERN, BuildOptionsIn, Name, Replicas
from shipway.builds import recipes
from shipway.builds.recipes import Recipe, Target
from shipway.drift.policy import Action, Policy
from shipway.errors import InvalidInput
from shipway.rollout.canary import CanarySpec, ShadowSpec
from shipway.rollout.checks import Thresholds
from shipway.rollout.controller import parse_spec
from shipway.rollout.experiment import ExperimentSpec

API_VERSION = "shipway.io/v1alpha1"
KIND = "ModelRelease"
SPEC_NAME = "shipway.yaml"
MAX_DEPTH = 32  # nesting
ALIAS_TAG = "tag:shipway.io,2026:alias"  # what an alias (*name) composes to; refused by _walk
MLFLOW_EVENTS = ("model_version.created", "model_version_alias.created")

Loc = tuple[str | int, ...]


def _repository_path(path: str) -> str:
    """A file of the model's repository, relative to the spec's directory: never
    absolute, never out of the repository through '..'."""
    if not path or path != path.strip() or "\x00" in path:
        raise ValueError("must be a non-empty path without surrounding spaces")
    if "\\" in path or re.match(r"^[A-Za-z]:", path):
        raise ValueError(f"{path!r}: use '/' and relative paths")
    if PurePosixPath(path).is_absolute():
        raise ValueError(f"{path!r} is absolute; paths are relative to the spec's directory")
    if ".." in PurePosixPath(path).parts:
        raise ValueError(f"{path!r} leaves the repository ('..')")
    return path


RepositoryPath = Annotated[str, Field(max_length=1000), AfterValidator(_repository_path)]


class _Spec(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, allow_inf_nan=False
    )


class BuildOptionsSpec(BuildOptionsIn):
    """The API's build options (``BuildOptionsIn``), camelCase: minCosine, maxFp32Layers,
    minTop1, minRowCosine, calibration."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, allow_inf_nan=False
    )


class ModelSpec(_Spec):
    name: Name
    onnx: RepositoryPath
    sample: RepositoryPath
    calibration: RepositoryPath | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class BuildSpec(_Spec):
    name: Name
    recipe: Recipe = Recipe.FP32
    target: Target = Target.ONNXRUNTIME_CPU
    options: BuildOptionsSpec = Field(default_factory=BuildOptionsSpec)

    def options_dict(self) -> dict[str, Any]:
        """Every option with its default filled in: the form the store keeps
        (``Build.options``), so equal options compare equal."""
        given = self.options.model_dump(exclude_none=True, mode="json")
        return recipes.BuildOptions.from_dict(given).to_dict()


def _setting_names() -> dict[str, str]:
    """camelCase -> the rollout engine's snake_case, for every setting it knows."""
    names: dict[str, str] = {}
    for cls in (CanarySpec, ExperimentSpec, ShadowSpec, Thresholds):
        assert is_dataclass(cls)
        names.update({to_camel(f.name): f.name for f in fields(cls)})
    return names


SETTING_NAMES = _setting_names()


def _engine_names(value: Any) -> Any:
    if isinstance(value, dict):
        return {SETTING_NAMES.get(k, k): _engine_names(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_engine_names(v) for v in value]
    return value


def _camel_words(message: str) -> str:
    """The engine's snake_case names in its messages, as the spec writes them."""
    return re.sub(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", lambda m: to_camel(m.group()), message)


class RolloutSpec(_Spec):
    strategy: Literal["canary", "experiment"] = "canary"
    settings: dict[str, Any] = Field(default_factory=dict)

    def engine_settings(self) -> dict[str, Any]:
        """The settings as the rollout API and engine take them (snake_case)."""
        return _engine_names(self.settings)


class DriftSpec(_Spec):
    actions: list[Action] = Field(default_factory=lambda: [Action.ALERT])
    webhook_url: str | None = Field(None, pattern=URL_PATTERN, max_length=2000)

    def policy(self) -> dict[str, Any]:
        """As the store and the drift API keep it."""
        data = {"actions": [a.value for a in self.actions], "webhook_url": self.webhook_url}
        return Policy.from_dict(data).to_dict()


class DeploymentSpec(_Spec):
    name: Name
    build: Name
    replicas: Replicas | None = None
    max_replicas: Replicas | None = None
    target_inflight: float | None = Field(None, gt=0, strict=True)
    scale_down_stabilization_window_seconds: float | None = Field(None, ge=0, strict=True)
    allow_signature_change: StrictBool = False
    rollout: RolloutSpec | None = None
    drift: DriftSpec | None = None

    @property
    def sets_scaling(self) -> bool:
        return any(
            v is not None
            for v in (
                self.replicas,
                self.max_replicas,
                self.target_inflight,
                self.scale_down_stabilization_window_seconds,
            )
        )


class MlflowTrigger(_Spec):
    events: list[Literal[MLFLOW_EVENTS]] = Field(min_length=1)  # type: ignore[valid-type]
    aliases: list[Name] = Field(default_factory=list)


class Triggers(_Spec):
    mlflow: MlflowTrigger | None = None


class ReleaseSpec(_Spec):
    api_version: Literal["shipway.io/v1alpha1"]
    kind: Literal["ModelRelease"]
    model: ModelSpec
    builds: list[BuildSpec] = Field(default_factory=list)
    deployment: DeploymentSpec | None = None
    triggers: Triggers | None = None

    def build(self, name: str) -> BuildSpec:
        return next(b for b in self.builds if b.name == name)

    def files(self) -> dict[str, str]:
        """The files the spec names: field -> path (relative to the spec)."""
        found = {"model.onnx": self.model.onnx, "model.sample": self.model.sample}
        if self.model.calibration is not None:
            found["model.calibration"] = self.model.calibration
        return found

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ---- parsing --------------------------------------------------------------------------


def parse(text: str, filename: str = SPEC_NAME) -> ReleaseSpec:
    """The typed spec of ``text``; ``InvalidInput`` names each error's field and line."""
    data, lines = load(text, filename)
    try:
        spec = ReleaseSpec.model_validate(data)
    except ValidationError as exc:
        problems = [(tuple(e["loc"]), _message(e)) for e in exc.errors()]
        raise InvalidInput(_report(filename, problems, lines)) from None
    problems = _rules(spec, lines)
    if problems:
        raise InvalidInput(_report(filename, problems, lines))
    return spec


class _Composer(yaml.SafeLoader):
    """PyYAML's safe composer, except that an alias (``*name``) composes to a marker
    node at the alias's own line instead of the anchored node: the tree stays a tree
    (no node reachable twice), and ``_walk`` refuses the marker naming its path."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.get_event()
            return ScalarNode(ALIAS_TAG, event.anchor, event.start_mark, event.end_mark)
        return super().compose_node(parent, index)  # type: ignore[no-any-return]


def load(text: str, filename: str = SPEC_NAME) -> tuple[dict[str, Any], dict[Loc, int]]:
    """The YAML's top-level mapping and the line (1-based) of every key and item."""
    try:
        node = yaml.compose(text, Loader=_Composer)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        what = f"{exc.context}, {exc.problem}" if exc.context else exc.problem
        raise InvalidInput(f"{filename}{where}: not valid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{filename}: not valid YAML: {exc}") from None
    if node is None:
        raise InvalidInput(
            f"{filename}: the file is empty; it needs apiVersion: {API_VERSION}, "
            f"kind: {KIND}, model and builds"
        )
    if not isinstance(node, MappingNode):
        raise InvalidInput(
            f"{filename} line {node.start_mark.line + 1}: the top level must be a mapping "
            f"(apiVersion, kind, model, builds, ...), not a {_kind(node)}"
        )
    lines: dict[Loc, int] = {}
    constructor = yaml.SafeLoader("")
    data = _walk(node, (), lines, constructor, filename)
    return data, lines


def _kind(node: Node) -> str:
    return {MappingNode: "mapping", SequenceNode: "list"}.get(type(node), "single value")


def _walk(
    node: Node, loc: Loc, lines: dict[Loc, int], constructor: yaml.SafeLoader, filename: str
) -> Any:
    _refuse_alias(node, loc, filename)
    if len(loc) > MAX_DEPTH:
        raise InvalidInput(
            f"{filename} line {node.start_mark.line + 1}: {_path(loc)}: nested too deeply"
        )
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            _refuse_alias(key_node, loc, filename)
            if not isinstance(key_node, ScalarNode):
                raise InvalidInput(f"{filename} line {line}: {_path(loc)}: a key must be a name")
            key = (
                "<<"
                if key_node.tag.endswith(":merge")
                else str(_scalar(key_node, constructor, filename))
            )
            if key == "<<":
                raise InvalidInput(
                    f"{filename} line {line}: {_path(loc)}: merge keys (<<) are not supported"
                )
            if key in out:
                first = lines[(*loc, key)]
                raise InvalidInput(
                    f"{filename} line {line}: {_path((*loc, key))}: duplicate key "
                    f"(first on line {first})"
                )
            lines[(*loc, key)] = line
            out[key] = _walk(value_node, (*loc, key), lines, constructor, filename)
        return out
    if isinstance(node, SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            items.append(_walk(item, (*loc, index), lines, constructor, filename))
        return items
    return _scalar(node, constructor, filename)


def _refuse_alias(node: Node, loc: Loc, filename: str) -> None:
    if node.tag == ALIAS_TAG:
        raise InvalidInput(
            f"{filename} line {node.start_mark.line + 1}: {_path(loc)}: YAML aliases "
            f"(*{node.value}) are not supported; write the value out"
        )


def _scalar(node: Node, constructor: yaml.SafeLoader, filename: str) -> Any:
    try:
        return constructor.construct_object(node)
    except yaml.YAMLError as exc:  # an unknown tag (!!python/object...), a bad timestamp
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInput(
            f"{filename} line {node.start_mark.line + 1}: not valid here: {problem}"
        ) from None


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line(loc: Loc, lines: dict[Loc, int]) -> int:
    """The line of ``loc``, or of its nearest parent written in the file."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _report(filename: str, problems: list[tuple[Loc, str]], lines: dict[Loc, int]) -> str:
    located = sorted(((_line(loc, lines), _path(loc), msg) for loc, msg in problems))
    return "\n".join(f"{filename} line {line}: {path}: {msg}" for line, path, msg in located)


def _choices(expected: str) -> str:
    return ", ".join(re.findall(r"'([^']*)'", expected)) or expected


def _message(error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "required, missing"
    if kind == "extra_forbidden":
        known = _known_fields(tuple(error["loc"][:-1]))
        return "unknown field" + (f"; known: {', '.join(known)}" if known else "")
    if kind in ("enum", "literal_error"):
        return f"{error['input']!r} is not one of {_choices(str(ctx.get('expected', '')))}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (key: value), not {_what(error['input'])}"
    if kind == "list_type":
        return f"must be a list (- item, or [a, b]), not {_what(error['input'])}"
    if kind == "string_pattern_mismatch":
        rule = PATTERN_RULES.get(str(ctx.get("pattern", "")))
        if rule is not None:
            return f"{error['input']!r}: {rule}"
    message = re.sub(r"^(Value error|Assertion failed), ", "", error["msg"])
    return re.sub(r"^Input should be ", "must be ", message)


PATTERN_RULES = {
    NAME_PATTERN: "must be lower-case letters, digits and '-', starting and ending with a "
    "letter or digit, at most 63 characters",
    URL_PATTERN: "must be an http:// or https:// URL",
}


def _what(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a single value ({value!r})"


def where(text: str, filename: str, loc: Loc) -> str:
    """``<filename> line N: <path>`` for a field of a valid spec, to start a message
    about it found later (a file the field names that is not what it should be)."""
    _, lines = load(text, filename)
    return f"{filename} line {_line(loc, lines)}: {_path(loc)}"


def _known_fields(loc: Loc) -> list[str]:
    """The field names the model at ``loc`` accepts (for "unknown field" errors)."""
    model: Any = ReleaseSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = next((f for f in model.model_fields.values() if (f.alias or "") == part), None)
        if field is None:
            return []
        inner = _model_in(field.annotation)
        if inner is None:
            return []
        model = inner
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _named_setting(loc: Loc, message: str, lines: dict[Loc, int]) -> Loc:
    """The setting under ``loc`` that the engine's message names first (the engine
    does not say where), else ``loc``."""
    under = [key for key in lines if len(key) > len(loc) and key[: len(loc)] == loc]
    named = [
        (message.find(str(key[-1])), key)
        for key in under
        if isinstance(key[-1], str) and re.search(rf"\b{re.escape(key[-1])}\b", message)
    ]
    return min(named)[1] if named else loc


def _rules(spec: ReleaseSpec, lines: dict[Loc, int]) -> list[tuple[Loc, str]]:
    """The rules that span fields, each the services' own check."""
    problems: list[tuple[Loc, str]] = []
    seen: dict[str, int] = {}
    for index, build in enumerate(spec.builds):
        if build.name in seen:
            problems.append(
                (
                    ("builds", index, "name"),
                    f"duplicate build name {build.name!r} (builds[{seen[build.name]}] has it too)",
                )
            )
        seen.setdefault(build.name, index)
        try:
            recipes.parse(build.recipe.value, build.target.value)
        except InvalidInput as exc:
            target: Loc = ("builds", index, "target")
            problems.append((target if target in lines else (*target[:2], "recipe"), str(exc)))
        try:
            build.options_dict()
        except InvalidInput as exc:
            problems.append((("builds", index, "options"), str(exc)))
    deployment = spec.deployment
    if deployment is None:
        return problems
    if deployment.build not in seen:
        names = ", ".join(seen) or "none"
        problems.append(
            (("deployment", "build"), f"{deployment.build!r} names no build; builds: {names}")
        )
    if (
        deployment.replicas is not None
        and deployment.max_replicas is not None
        and deployment.max_replicas < deployment.replicas
    ):
        problems.append(
            (
                ("deployment", "maxReplicas"),
                f"must be at least replicas ({deployment.replicas}), got {deployment.max_replicas}",
            )
        )
    if deployment.rollout is not None:
        try:
            parse_spec(deployment.rollout.strategy, deployment.rollout.engine_settings())
        except InvalidInput as exc:
            message = _camel_words(str(exc))
            where = _named_setting(("deployment", "rollout", "settings"), message, lines)
            problems.append((where, message))
    if deployment.drift is not None:
        try:
            deployment.drift.policy()
        except InvalidInput as exc:
            problems.append((("deployment", "drift"), _camel_words(str(exc))))
    return problems
