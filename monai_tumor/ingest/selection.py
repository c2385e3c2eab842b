"""Choose which series of a study feed which model input, and stack them.

Series selection rules
----------------------
The rule format follows MONAI Deploy App SDK's ``DICOMSeriesSelectorOperator``
(same ``"selections"`` / ``"name"`` / ``"conditions"`` field names and the same
matching of one condition), so rules written for MONAI Deploy read here
unchanged. Each selection names one **model input** (``"ct"``, ``"flair"``,
``"t1c"`` ...) and exactly one series is chosen for it::

    {
      "selections": [
        {
          "name": "flair",
          "required": true,
          "conditions": {"Modality": "(?i)^MR$", "Orientation": "axial"},
          "any": [
            {"SeriesDescription": "(?i)flair"},
            {"ProtocolName": "(?i)flair"}
          ],
          "exclude": {"ImageType": "(?i)^(DERIVED|LOCALIZER)$"},
          "prefer": [{"NumberOfSlices": "max"}, {"SliceSpacing": "min"}]
        }
      ]
    }

One condition ``"Key": value`` matches a series attribute like this:

* **string** value: a regular expression, searched case-insensitively in the
  attribute (after a case-insensitive equality check, as MONAI Deploy does).
  Against a multi-valued attribute (``ImageType``) any one value may match.
* **list of strings**: every listed value must be among the attribute's values
  (case-insensitive), e.g. ``"ImageType": ["ORIGINAL", "PRIMARY"]``.
* **list of two numbers** ``[min, max]`` (either may be ``null`` for open):
  the numeric attribute lies in the closed range, e.g. ``"NumberOfSlices": [20, null]``.
* **number** or **boolean**: equality (``"Uniform": true``).
* ``{"present": true}`` / ``{"present": false}``: the attribute is / is not set
  (non-empty), e.g. ``"ContrastBolusAgent": {"present": true}``.
* ``null`` or ``""``: ignored, as in MONAI Deploy.

A missing or empty attribute never matches (except ``{"present": false}``).

Extensions over MONAI Deploy (all optional, per selection):

``"any"``
    A list of condition sets; at least one whole set must match (OR of ANDs).
``"exclude"``
    A condition set; a series matching **any one** of these conditions is
    rejected (e.g. localizers, derived images).
``"prefer"``
    Tie-breaking among matching series: a list of one-key objects
    ``{"Key": "max" | "min"}`` applied in order; series lacking the key rank
    last; remaining ties keep the order of the study.
``"required"``
    ``true`` (default): the study cannot be processed without this input.

Top-level keys: ``"selections"`` (required), ``"distinct"`` (default ``true``:
a series chosen for an earlier selection is not offered to later ones), and
free-text ``"description"`` / ``"version"``.

Condition keys are DICOM keywords (checked against pydicom's dictionary) or the
derived keys of :meth:`monai_tumor.ingest.series.SeriesInfo.selection_attributes`
(:data:`DERIVED_KEYS`: ``Orientation``, ``NumberOfSlices``, ``SliceSpacing``,
``Uniform``, ``Decodable``, ``MultiFrame``, ...); a misspelt key is an error.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from pydicom.datadict import tag_for_keyword

from monai_tumor.errors import ConfigError, InvalidSeriesError, UnsupportedInputError

if TYPE_CHECKING:
    from monai.data import MetaTensor

__all__ = [
    "DERIVED_KEYS",
    "InputSelection",
    "Rejection",
    "SelectionResult",
    "SelectionRule",
    "SelectionRules",
    "SelectionStatus",
    "load_inputs",
    "load_rules",
    "parse_rules",
    "select_series",
]

#: Keys computed by the scanner rather than read from one DICOM attribute.
DERIVED_KEYS: frozenset[str] = frozenset(
    {
        "Orientation",
        "NumberOfSlices",
        "NumberOfStacks",
        "NumberOfInstances",
        "SliceSpacing",
        "Uniform",
        "Decodable",
        "MultiFrame",
        "ImageKind",
        "PatientHash",
        "TruncatedInstances",
    }
)

_TOP_LEVEL_KEYS = frozenset({"selections", "distinct", "description", "version"})
_SELECTION_KEYS = frozenset(
    {"name", "description", "required", "conditions", "any", "exclude", "prefer"}
)


# --------------------------------------------------------------------------- conditions


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, (list, tuple, set, frozenset)):
        return len(value) == 0
    return False


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(repr(str(v)) for v in value) + "]"
    return repr(value)


@dataclass(frozen=True)
class _Condition:
    """One parsed ``"Key": value`` condition (see the module docstring)."""

    key: str
    kind: str  # "regex", "all_of", "range", "equals", "present"
    raw: Any
    pattern: re.Pattern[str] | None = None
    values: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None

    def describe(self) -> str:
        if self.kind == "regex":
            return f"{self.key} matches {self.raw!r}"
        if self.kind == "all_of":
            return f"{self.key} contains {_show(self.values)}"
        if self.kind == "range":
            return f"{self.key} in [{self.low}, {self.high}]"
        if self.kind == "present":
            return f"{self.key} {'present' if self.raw else 'absent'}"
        return f"{self.key} == {self.raw!r}"

    def check(self, attrs: Mapping[str, Any]) -> str | None:
        """Return ``None`` if the condition holds, else why it does not."""
        value = attrs.get(self.key)
        if self.kind == "present":
            present = not _is_empty(value)
            if present == bool(self.raw):
                return None
            return f"{self.key} is {'missing' if self.raw else f'present ({_show(value)})'}"
        if _is_empty(value):
            return f"{self.key} is missing (wanted {self.describe()})"
        if self.kind == "regex":
            assert self.pattern is not None
            items = value if isinstance(value, (list, tuple)) else [value]
            for item in items:
                text = str(item)
                if text.casefold() == str(self.raw).casefold() or self.pattern.search(text):
                    return None
            return f"{self.key} {_show(value)} does not match {self.raw!r}"
        if self.kind == "all_of":
            items = value if isinstance(value, (list, tuple)) else [value]
            have = {str(v).strip().casefold() for v in items}
            lacking = [v for v in self.values if v.casefold() not in have]
            if not lacking:
                return None
            return f"{self.key} {_show(value)} lacks {_show(lacking)}"
        if self.kind == "range":
            number = _as_number(value)
            if number is None:
                return f"{self.key} {_show(value)} is not a number (wanted {self.describe()})"
            if (self.low is None or number >= self.low) and (
                self.high is None or number <= self.high
            ):
                return None
            return f"{self.key} {number:g} outside [{self.low}, {self.high}]"
        # equals
        if isinstance(self.raw, bool):
            if isinstance(value, (bool, np.bool_)) and bool(value) == self.raw:
                return None
            return f"{self.key} is {value!r}, wanted {self.raw!r}"
        number = _as_number(value)
        if number is not None and math.isclose(number, float(self.raw), rel_tol=1e-6, abs_tol=1e-9):
            return None
        return f"{self.key} {_show(value)} != {self.raw!r}"


def _as_number(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_condition(key: Any, value: Any, where: str) -> _Condition | None:
    path = f"{where}.{key}"
    if not isinstance(key, str) or not key:
        raise ConfigError(f"condition key {key!r} at {where} must be a non-empty string")
    if key not in DERIVED_KEYS and tag_for_keyword(key) is None:
        raise ConfigError(
            f"unknown attribute {key!r} at {path}: expected a DICOM keyword (e.g. "
            f"'SeriesDescription') or one of {sorted(DERIVED_KEYS)}; check the spelling"
        )
    if value is None or (isinstance(value, str) and value == ""):
        return None  # ignored, as in MONAI Deploy
    if isinstance(value, str):
        try:
            pattern = re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"invalid regular expression {value!r} at {path}: {exc}") from exc
        return _Condition(key, "regex", value, pattern=pattern)
    if isinstance(value, bool) or _is_number(value):
        return _Condition(key, "equals", value)
    if isinstance(value, list):
        if len(value) == 2 and all(v is None or _is_number(v) for v in value):
            if value[0] is None and value[1] is None:
                raise ConfigError(f"range at {path} is [null, null]: give at least one bound")
            low = None if value[0] is None else float(value[0])
            high = None if value[1] is None else float(value[1])
            if low is not None and high is not None and low > high:
                raise ConfigError(f"range at {path} has min {low} > max {high}")
            return _Condition(key, "range", value, low=low, high=high)
        if value and all(isinstance(v, str) and v for v in value):
            return _Condition(key, "all_of", value, values=tuple(v.strip() for v in value))
        raise ConfigError(
            f"list at {path} is {value!r}: expected non-empty strings (all must be present) "
            "or two numbers [min, max] (null for an open bound)"
        )
    if isinstance(value, dict):
        if set(value) == {"present"} and isinstance(value["present"], bool):
            return _Condition(key, "present", value["present"])
        raise ConfigError(
            f"object at {path} is {value!r}: the only object condition is "
            '{"present": true} or {"present": false}'
        )
    raise ConfigError(f"condition at {path} has unsupported type {type(value).__name__}")


def _parse_condition_set(value: Any, where: str) -> tuple[_Condition, ...]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be an object of conditions, got {type(value).__name__}")
    parsed = (_parse_condition(k, v, where) for k, v in value.items())
    return tuple(c for c in parsed if c is not None)


# --------------------------------------------------------------------------- rules


class _PreferOrder(str, Enum):
    MAX = "max"
    MIN = "min"


@dataclass(frozen=True)
class SelectionRule:
    """One named model input and how to find its series.

    Attributes
    ----------
    name
        The model input this selection feeds (``"ct"``, ``"flair"`` ...).
    required
        Whether a study without a matching series must be skipped.
    conditions
        All must match (AND).
    any_of
        Alternative condition sets; one whole set must match (empty: no test).
    exclude
        A series matching any one of these is rejected.
    prefer
        ``(key, "max"|"min")`` tie-breakers, applied in order.
    description
        Free text.
    """

    name: str
    required: bool = True
    conditions: tuple[_Condition, ...] = ()
    any_of: tuple[tuple[_Condition, ...], ...] = ()
    exclude: tuple[_Condition, ...] = ()
    prefer: tuple[tuple[str, str], ...] = ()
    description: str = ""


@dataclass(frozen=True)
class SelectionRules:
    """A validated set of selection rules.

    Attributes
    ----------
    selections
        One rule per model input, in order.
    distinct
        Whether one series may feed at most one input.
    description
        Free text from the rule file.
    source
        File the rules came from, if any (for messages).
    """

    selections: tuple[SelectionRule, ...]
    distinct: bool = True
    description: str = ""
    source: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the model inputs, in rule order."""
        return tuple(s.name for s in self.selections)


def _parse_selection(item: Any, index: int) -> SelectionRule:
    where = f"selections[{index}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be an object, got {type(item).__name__}")
    unknown = set(item) - _SELECTION_KEYS
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(unknown)} in {where}; allowed: {sorted(_SELECTION_KEYS)}"
        )
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name must be a non-empty string (the model input name)")
    where = f"selections[{index}] ({name!r})"
    required = item.get("required", True)
    if not isinstance(required, bool):
        raise ConfigError(f"{where}.required must be true or false, got {required!r}")
    conditions = _parse_condition_set(item.get("conditions", {}), f"{where}.conditions")
    any_raw = item.get("any", [])
    if not isinstance(any_raw, list):
        raise ConfigError(f"{where}.any must be a list of condition objects")
    any_of = tuple(
        _parse_condition_set(group, f"{where}.any[{g}]") for g, group in enumerate(any_raw)
    )
    if any(len(group) == 0 for group in any_of):
        raise ConfigError(f"{where}.any has an empty condition set, which would match everything")
    exclude = _parse_condition_set(item.get("exclude", {}), f"{where}.exclude")
    prefer_raw = item.get("prefer", [])
    if not isinstance(prefer_raw, list):
        raise ConfigError(f"{where}.prefer must be a list like [{{'NumberOfSlices': 'max'}}]")
    prefer: list[tuple[str, str]] = []
    for p, entry in enumerate(prefer_raw):
        if not (isinstance(entry, dict) and len(entry) == 1):
            raise ConfigError(f"{where}.prefer[{p}] must be a one-key object like {{'Key': 'max'}}")
        ((key, order),) = entry.items()
        _parse_condition(key, None, f"{where}.prefer[{p}]")  # validates the key name
        if order not in {o.value for o in _PreferOrder}:
            raise ConfigError(f"{where}.prefer[{p}].{key} is {order!r}; expected 'max' or 'min'")
        prefer.append((key, order))
    if not conditions and not any_of:
        raise ConfigError(f"{where} has no conditions: it would match every series")
    description = item.get("description", "")
    return SelectionRule(
        name=name.strip(),
        required=required,
        conditions=conditions,
        any_of=any_of,
        exclude=exclude,
        prefer=tuple(prefer),
        description=str(description),
    )


def parse_rules(data: Mapping[str, Any], *, source: str | None = None) -> SelectionRules:
    """Validate a decoded JSON rule document.

    Parameters
    ----------
    data
        The decoded JSON (see the module docstring for the format).
    source
        Where it came from, used in error messages.

    Returns
    -------
    SelectionRules
        The validated rules.

    Raises
    ------
    ConfigError
        If a key is unknown or malformed; the message names the key.
    """
    try:
        if not isinstance(data, Mapping):
            raise ConfigError(f"rules must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - _TOP_LEVEL_KEYS
        if unknown:
            raise ConfigError(
                f"unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_LEVEL_KEYS)}"
            )
        selections = data.get("selections")
        if not isinstance(selections, list) or not selections:
            raise ConfigError('"selections" must be a non-empty list of selection objects')
        parsed = tuple(_parse_selection(item, i) for i, item in enumerate(selections))
        names = [s.name for s in parsed]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ConfigError(f"selection name(s) {duplicated} used more than once")
        distinct = data.get("distinct", True)
        if not isinstance(distinct, bool):
            raise ConfigError(f'"distinct" must be true or false, got {distinct!r}')
    except ConfigError as exc:
        if source is not None and exc.path is None:
            raise ConfigError(exc.reason, path=source) from None
        raise
    return SelectionRules(
        selections=parsed,
        distinct=distinct,
        description=str(data.get("description", "")),
        source=source,
    )


def load_rules(source: str | os.PathLike[str] | Mapping[str, Any]) -> SelectionRules:
    """Load and validate selection rules.

    Parameters
    ----------
    source
        A JSON file path, a JSON string (starting with ``{``), or an already
        decoded mapping.

    Returns
    -------
    SelectionRules
        The validated rules.

    Raises
    ------
    ConfigError
        If the file is missing, is not JSON, or a rule is malformed.
    """
    if isinstance(source, Mapping):
        return parse_rules(source)
    if isinstance(source, str) and source.lstrip().startswith("{"):
        try:
            return parse_rules(json.loads(source))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"rules text is not valid JSON: {exc}") from exc
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read selection rules ({exc.strerror}); expected a JSON file", path=path
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", path=path
        ) from exc
    return parse_rules(data, source=str(path))


# --------------------------------------------------------------------------- selection


class SelectionStatus(str, Enum):
    """Outcome of one model input's selection."""

    SELECTED = "selected"
    #: A required input had no matching series: the study must be skipped.
    MISSING = "missing"
    #: An optional input had no matching series.
    ABSENT = "absent"


@dataclass(frozen=True)
class Rejection:
    """Why one series was not chosen for one input."""

    series_uid: str
    label: str
    reason: str

    def __str__(self) -> str:
        return f"{self.label}: {self.reason}"


@dataclass(frozen=True)
class InputSelection:
    """The series chosen (or not) for one model input.

    Attributes
    ----------
    name
        Model input name.
    status
        Selected, missing (required) or absent (optional).
    series_uid
        SeriesInstanceUID of the chosen series, ``None`` if none.
    reason
        Why this series was chosen, or why none was.
    candidates
        UIDs of every matching series, best first.
    rejected
        One entry per series of the study that was not chosen.
    required
        Whether the rule marked this input required.
    """

    name: str
    status: SelectionStatus
    series_uid: str | None
    reason: str
    candidates: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for run reports)."""
        return {
            "name": self.name,
            "status": self.status.value,
            "series_uid": self.series_uid,
            "reason": self.reason,
            "candidates": list(self.candidates),
            "rejected": [
                {"series_uid": r.series_uid, "label": r.label, "reason": r.reason}
                for r in self.rejected
            ],
        }


@dataclass(frozen=True)
class SelectionResult:
    """Selections for every model input of one study.

    Attributes
    ----------
    inputs
        Per model input (rule order), what was chosen and why.
    """

    inputs: Mapping[str, InputSelection] = field(default_factory=dict)

    @property
    def selected(self) -> dict[str, str]:
        """Model input name -> SeriesInstanceUID, for chosen inputs only."""
        return {n: s.series_uid for n, s in self.inputs.items() if s.series_uid is not None}

    @property
    def missing(self) -> tuple[str, ...]:
        """Names of required inputs without a series."""
        return tuple(n for n, s in self.inputs.items() if s.status is SelectionStatus.MISSING)

    @property
    def ok(self) -> bool:
        """True when every required input has a series."""
        return not self.missing

    def summary(self) -> str:
        """Human-readable multi-line account, suitable for a batch log."""
        lines = []
        for sel in self.inputs.values():
            head = f"{sel.name}: {sel.status.value}"
            lines.append(f"{head} {sel.series_uid} ({sel.reason})" if sel.series_uid else head)
            if sel.series_uid is None:
                lines.append(f"  {sel.reason}")
                lines.extend(f"  - {r}" for r in sel.rejected)
        return "\n".join(lines)

    def raise_if_missing(self) -> None:
        """Raise if a required input has no series.

        Raises
        ------
        UnsupportedInputError
            Naming each missing input and why every candidate was rejected.
        """
        if self.ok:
            return
        details = []
        for name in self.missing:
            sel = self.inputs[name]
            why = "; ".join(str(r) for r in sel.rejected) or "the study has no series"
            details.append(f"no series matched {name!r} (candidates: {why})")
        raise UnsupportedInputError(
            "skipped: " + " | ".join(details) + ". Check the selection rules or the study."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for run reports)."""
        return {
            "ok": self.ok,
            "missing": list(self.missing),
            "inputs": {n: s.to_dict() for n, s in self.inputs.items()},
        }


@runtime_checkable
class _HasSelectionAttributes(Protocol):
    def selection_attributes(self) -> dict[str, Any]: ...


def _attributes_of(series: Mapping[str, Any] | _HasSelectionAttributes) -> Mapping[str, Any]:
    if isinstance(series, Mapping):
        return series
    if isinstance(series, _HasSelectionAttributes):
        return series.selection_attributes()
    raise TypeError(
        f"expected a mapping of attributes or an object with selection_attributes(), "
        f"got {type(series).__name__}"
    )


def _label(attrs: Mapping[str, Any], uid: str) -> str:
    description = attrs.get("SeriesDescription") or attrs.get("ProtocolName") or ""
    modality = attrs.get("Modality") or "?"
    short = uid if len(uid) <= 16 else "..." + uid[-12:]
    return f"series {short} [{modality} {str(description)!r}]"


def _failures(rule: SelectionRule, attrs: Mapping[str, Any]) -> list[str]:
    """Every reason this series fails the rule (empty: it matches)."""
    reasons = [why for c in rule.conditions if (why := c.check(attrs)) is not None]
    if rule.any_of:
        group_reasons: list[str] = []
        for group in rule.any_of:
            why_group = [why for c in group if (why := c.check(attrs)) is not None]
            if not why_group:
                group_reasons = []
                break
            group_reasons.append(" and ".join(why_group))
        if group_reasons:
            reasons.append("none of the alternatives matched (" + "; ".join(group_reasons) + ")")
    for c in rule.exclude:
        if c.check(attrs) is None:
            reasons.append(f"excluded because {c.describe()} ({c.key}={_show(attrs.get(c.key))})")
    return reasons


def _rank(
    rule: SelectionRule, matches: list[tuple[int, str, Mapping[str, Any]]]
) -> list[tuple[int, str, Mapping[str, Any]]]:
    def sort_key(item: tuple[int, str, Mapping[str, Any]]) -> tuple[Any, ...]:
        index, _, attrs = item
        key: list[Any] = []
        for name, order in rule.prefer:
            number = _as_number(attrs.get(name)) if not _is_empty(attrs.get(name)) else None
            if number is None:
                key.append((1, 0.0))  # missing ranks last
            else:
                key.append((0, -number if order == _PreferOrder.MAX.value else number))
        key.append(index)  # remaining ties keep study order
        return tuple(key)

    return sorted(matches, key=sort_key)


def select_series(
    study: Sequence[Mapping[str, Any] | _HasSelectionAttributes],
    rules: SelectionRules | Mapping[str, Any] | str | os.PathLike[str],
) -> SelectionResult:
    """Choose one series per model input from a study.

    Parameters
    ----------
    study
        The study's series: attribute mappings as returned by
        :meth:`monai_tumor.ingest.series.SeriesInfo.selection_attributes`, or
        objects having that method. ``SeriesInstanceUID`` identifies each
        series (its position in ``study`` is used if absent).
    rules
        Validated rules, a decoded rule document, JSON text or a rule file.

    Returns
    -------
    SelectionResult
        For each rule's model input: the chosen series, the reason, and a
        reason for every series not chosen. A required input without a series
        has status ``MISSING`` (call :meth:`SelectionResult.raise_if_missing`
        to turn that into an error).
    """
    parsed = rules if isinstance(rules, SelectionRules) else load_rules(rules)
    entries: list[tuple[int, str, Mapping[str, Any]]] = []
    for index, series in enumerate(study):
        attrs = _attributes_of(series)
        uid = str(attrs.get("SeriesInstanceUID") or f"series #{index}")
        entries.append((index, uid, attrs))

    taken: dict[str, str] = {}
    results: dict[str, InputSelection] = {}
    for rule in parsed.selections:
        rejected: list[Rejection] = []
        matches: list[tuple[int, str, Mapping[str, Any]]] = []
        for entry in entries:
            _, uid, attrs = entry
            if parsed.distinct and uid in taken:
                rejected.append(
                    Rejection(uid, _label(attrs, uid), f"already selected for {taken[uid]!r}")
                )
                continue
            reasons = _failures(rule, attrs)
            if reasons:
                rejected.append(Rejection(uid, _label(attrs, uid), "; ".join(reasons)))
            else:
                matches.append(entry)
        if not matches:
            status = SelectionStatus.MISSING if rule.required else SelectionStatus.ABSENT
            reason = (
                f"no series matched {rule.name!r}"
                if entries
                else f"no series matched {rule.name!r}: the study is empty"
            )
            results[rule.name] = InputSelection(
                rule.name, status, None, reason, (), tuple(rejected), rule.required
            )
            continue
        ranked = _rank(rule, matches)
        _, best_uid, _ = ranked[0]
        prefer_text = ", ".join(f"{k} {o}" for k, o in rule.prefer)
        if len(ranked) == 1:
            reason = "the only series matching every condition"
        elif rule.prefer:
            reason = f"best of {len(ranked)} matching series by {prefer_text}"
        else:
            reason = f"first of {len(ranked)} matching series in study order"
        for place, (_, uid, attrs) in enumerate(ranked[1:], start=2):
            values = ", ".join(f"{k}={_show(attrs.get(k))}" for k, _ in rule.prefer)
            why = f"matched, but ranked {place} of {len(ranked)}"
            why += f" by {prefer_text} ({values})" if rule.prefer else " (study order)"
            rejected.append(Rejection(uid, _label(attrs, uid), why))
        taken[best_uid] = rule.name
        results[rule.name] = InputSelection(
            rule.name,
            SelectionStatus.SELECTED,
            best_uid,
            reason,
            tuple(uid for _, uid, _ in ranked),
            tuple(rejected),
            rule.required,
        )
    return SelectionResult(inputs=results)


# --------------------------------------------------------------------------- stacking


def _as_metatensor(value: Any, name: str) -> MetaTensor:
    from monai.data import MetaTensor

    if isinstance(value, MetaTensor):
        img = value
    elif isinstance(value, (str, os.PathLike)):
        from monai_tumor.ingest.reader import read_series

        img = read_series(value)
    else:
        raise TypeError(
            f"input {name!r}: expected a MetaTensor or a path, got {type(value).__name__}"
        )
    if img.ndim != 4:
        raise UnsupportedInputError(
            f"input {name!r} has shape {tuple(img.shape)}; expected (C, I, J, K) channel-first 3D"
        )
    return img


def load_inputs(
    selected: Mapping[str, MetaTensor | str | os.PathLike[str]],
    *,
    reference: str,
    order: Sequence[str],
    mode: str = "bilinear",
    require_same_frame_of_reference: bool = True,
) -> MetaTensor:
    """Resample every input onto the reference input's grid and stack channels.

    Parameters
    ----------
    selected
        Model input name -> image: a ``MetaTensor`` shaped ``(C, I, J, K)`` with
        a RAS affine, or a path read with
        :func:`monai_tumor.ingest.reader.read_series`.
    reference
        Name of the input whose voxel grid (affine, shape) the output takes.
    order
        Names in channel order (must include ``reference``).
    mode
        Interpolation for non-reference inputs (MONAI ``ResampleToMatch``):
        ``"bilinear"`` (trilinear in 3D, for images) or ``"nearest"`` (labels).
        Inputs already on the reference grid are copied, not interpolated.
    require_same_frame_of_reference
        Refuse inputs whose ``FrameOfReferenceUID`` differs from the
        reference's: their world coordinates are not comparable without a
        registration. Inputs without the key (NIfTI) are not checked.

    Returns
    -------
    MetaTensor
        ``(sum of C, I, J, K)`` float32 on the reference grid; ``affine`` is the
        reference's (RAS); meta ``"channel_names"`` lists one name per channel
        and ``"source_series"`` maps names to their SeriesInstanceUID or file.

    Raises
    ------
    ConfigError
        If ``reference`` or a name in ``order`` is not in ``selected``.
    InvalidSeriesError
        If frames of reference differ (see ``require_same_frame_of_reference``).
    """
    from monai.data import MetaTensor
    from monai.transforms import ResampleToMatch

    if reference not in order:
        raise ConfigError(f"reference input {reference!r} is not in order {list(order)}")
    missing = [n for n in order if n not in selected]
    if missing:
        raise ConfigError(
            f"inputs {missing} requested in order but not given (have {sorted(selected)})"
        )
    ref = _as_metatensor(selected[reference], reference)
    ref_affine = torch.as_tensor(ref.affine, dtype=torch.float64)
    ref_for = ref.meta.get("FrameOfReferenceUID")
    resample = ResampleToMatch(mode=mode, padding_mode="zeros", dtype=np.float64)
    channels: list[torch.Tensor] = []
    names: list[str] = []
    sources: dict[str, str] = {}
    for name in order:
        img = ref if name == reference else _as_metatensor(selected[name], name)
        img_for = img.meta.get("FrameOfReferenceUID")
        if require_same_frame_of_reference and ref_for and img_for and img_for != ref_for:
            raise InvalidSeriesError(
                f"input {name!r} has FrameOfReferenceUID {img_for}, the reference "
                f"{reference!r} has {ref_for}: their coordinates are not comparable. Register "
                "them first, or pass require_same_frame_of_reference=False if you know they align."
            )
        same_grid = tuple(img.shape[1:]) == tuple(ref.shape[1:]) and torch.allclose(
            torch.as_tensor(img.affine, dtype=torch.float64), ref_affine, atol=1e-4
        )
        if same_grid:
            data = img.as_tensor().to(torch.float32)
        else:
            out = resample(img, img_dst=ref)
            data = torch.as_tensor(out).to(torch.float32)
        channels.append(data)
        names.extend(
            [name] if data.shape[0] == 1 else [f"{name}[{c}]" for c in range(data.shape[0])]
        )
        sources[name] = str(
            img.meta.get("SeriesInstanceUID") or img.meta.get("filename_or_obj", "")
        )
    meta = {k: v for k, v in ref.meta.items() if k not in {"affine", "original_affine"}}
    meta["channel_names"] = names
    meta["source_series"] = sources
    meta["original_channel_dim"] = 0
    stacked = MetaTensor(torch.cat(channels, dim=0), affine=ref_affine.clone(), meta=meta)
    return stacked
