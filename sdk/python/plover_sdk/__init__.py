"""plover-sdk for Python: write Plover migration handlers as Python classes.

A handler subclasses `Handler`, sets its name, version and kinds, and implements `plan`,
`validate`, `execute` and `rollback` with ordinary Python values; `export(MyHandler)` makes
it the component's export. componentize-py builds it against the contract's WIT
(plover:migration@0.2.0):

    componentize-py -d wit/v0.2.0 -w handler-plugin componentize app \\
        -p . -p path/to/plover/sdk/python -o my_handler.wasm

Errors: raise `InvalidSpec`, `StepFailed`, `DependencyUnavailable`... (each a
`MigrationFailed` with its contract kind and `retryable`, and optionally what an operator can
do about it: `raise StepFailed("...").with_recovery("grant-binding", "grant 'target'")`). Any
other exception fails the
call as `step-failed` with its type, message and traceback, in the job log and in the error
the operator sees. `print()` reaches the job log too.

The rules every handler lives by (the same as in Rust): `plan` and `validate` may not write;
a batch may be redone after a crash, so each must be idempotent; write what rollback needs to
`Bucket.job_state()` before you change the target (it is durable when the call returns);
object results count once their checkpoint (or the step's end) is recorded.

Contract 0.2: a `Step` may name a worker `queue` (an external tool runs it) and an
`estimated_ms`; `plan` may return a `Plan` to give the whole migration an estimate; `execute`
may return `partial(summary)` after recording some objects as failed, and the operator may then
retry just those objects, which calls `execute_objects(spec, step, names)`.
"""

import json
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import http as _http
from wit_world.imports import job as _job
from wit_world.imports import kv as _kv
from wit_world.imports import sql as _sql
from wit_world.imports import types as _types

# Contract types, re-exported under their names.
StepKind = _types.StepKind
Severity = _types.Severity
RiskLevel = _types.RiskLevel
ObjectStatus = _types.ObjectStatus
ErrorKind = _types.ErrorKind
ValidationLevel = _types.ValidationLevel
StepOutcome = _types.StepOutcome

# The longest traceback put into an error message; the job log has every line of it.
MAX_TRACEBACK_CHARS = 8000


# ---- errors ---------------------------------------------------------------------------

class MigrationFailed(Exception):
    """A contract error: its `kind` and whether the host may retry the call."""

    kind = ErrorKind.STEP_FAILED

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.recovery: List[Tuple[str, str]] = []

    def with_recovery(self, action: str, description: str) -> "MigrationFailed":
        """Add what an operator can do next (`action` a short code, `description` for a human)."""
        self.recovery.append((action, description))
        return self

    def to_contract(self) -> _types.MigrationError:
        return _types.MigrationError(
            kind=self.kind,
            message=self.message,
            retryable=self.retryable,
            recovery=[_types.RecoveryAction(a, d) for a, d in self.recovery],
        )


class InvalidSpec(MigrationFailed):
    kind = ErrorKind.INVALID_SPEC


class ValidationFailed(MigrationFailed):
    kind = ErrorKind.VALIDATION_FAILED


class StepFailed(MigrationFailed):
    kind = ErrorKind.STEP_FAILED


class DependencyUnavailable(MigrationFailed):
    kind = ErrorKind.DEPENDENCY_UNAVAILABLE

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message, retryable)


class DataCorruption(MigrationFailed):
    kind = ErrorKind.DATA_CORRUPTION


class Cancelled(MigrationFailed):
    kind = ErrorKind.CANCELLED

    def __init__(self, message: str = "cancelled", retryable: bool = True):
        super().__init__(message, retryable)


def _from_host_error(value: Any) -> MigrationFailed:
    """A connector's error (raised by the bindings as `Err`) as the contract error it means."""
    name = type(value).__name__
    detail = getattr(value, "value", value)
    if name.endswith("NotGranted"):
        return InvalidSpec(f"binding not granted: {detail}")
    if name.endswith("ReadOnly"):
        return StepFailed(f"write refused during a read-only call: {detail}")
    if name.endswith("InvalidArgument"):
        return StepFailed(f"invalid argument: {detail}")
    if name.endswith("Timeout"):
        return DependencyUnavailable(f"timed out: {detail}")
    if name.endswith("Denied"):
        return StepFailed(f"refused by the host: {detail}")
    return DependencyUnavailable(f"{name.split('_')[-1].lower()}: {detail}")


def _host(call, *args):
    try:
        return call(*args)
    except Err as e:
        raise _from_host_error(e.value) from None


# ---- the spec, plans and reports --------------------------------------------------------

@dataclass
class Spec:
    """One migration job as the handler sees it; `params` is the parsed `parameters`."""

    id: str
    kind: str
    params: Dict[str, Any]
    bindings: List[str]
    batch_size: int
    dry_run: bool
    validation_level: ValidationLevel

    def require_bindings(self, *names: str) -> None:
        missing = [n for n in names if n not in self.bindings]
        if missing:
            raise InvalidSpec(f"this handler needs the bindings {', '.join(missing)} (granted: {', '.join(self.bindings) or 'none'})")

    def param(self, name: str, default: Any = ..., kind: type = object) -> Any:
        """One parameter, checked: missing (without a default) or of another type is `InvalidSpec`."""
        if name not in self.params:
            if default is ...:
                raise InvalidSpec(f"parameter {name!r} is required")
            return default
        value = self.params[name]
        if not isinstance(value, kind):
            raise InvalidSpec(f"parameter {name!r} must be a {kind.__name__}, not {type(value).__name__}")
        return value


def _spec(raw: _types.MigrationSpec) -> Spec:
    try:
        params = json.loads(raw.parameters) if raw.parameters else {}
    except ValueError as e:
        raise InvalidSpec(f"parameters are not JSON: {e}") from None
    if not isinstance(params, dict):
        raise InvalidSpec("parameters must be a JSON object")
    return Spec(
        id=raw.id,
        kind=raw.kind,
        params=params,
        bindings=list(raw.bindings),
        batch_size=raw.options.batch_size,
        dry_run=raw.options.dry_run,
        validation_level=raw.options.validation_level,
    )


@dataclass
class Step:
    """A plan step. `after` names the steps it depends on."""

    id: str
    kind: StepKind
    description: str
    after: List[str] = field(default_factory=list)
    expected_objects: Optional[int] = None
    reversible: bool = False
    resumable: bool = False
    queue: Optional[str] = None
    estimated_ms: Optional[int] = None

    def _contract(self) -> _types.PlanStep:
        return _types.PlanStep(self.id, self.kind, self.description, list(self.after), self.expected_objects, self.reversible, self.resumable, self.queue, self.estimated_ms)


def _step(raw: _types.PlanStep) -> Step:
    return Step(raw.id, raw.kind, raw.description, list(raw.depends_on), raw.expected_objects, raw.reversible, raw.resumable, raw.queue, raw.estimated_duration_ms)


@dataclass
class Plan:
    """What `plan` may return instead of a list of steps, to give the whole migration an
    estimate (without one the host sums the steps' estimates when each has one)."""

    steps: List[Step]
    estimated_ms: Optional[int] = None


@dataclass
class Report:
    """What `execute` may return instead of a summary string: `partial(...)` says some
    objects failed (each recorded with `failed`) and the rest are usable."""

    summary: str
    outcome: StepOutcome = StepOutcome.COMPLETE


def partial(summary: str) -> Report:
    return Report(summary, StepOutcome.PARTIAL)


def _report(value: Any) -> _types.StepReport:
    if isinstance(value, Report):
        return _types.StepReport(value.summary, value.outcome)
    return _types.StepReport(str(value), StepOutcome.COMPLETE)


@dataclass
class Finding:
    severity: Severity
    code: str
    message: str
    step: Optional[str] = None


# ---- reporting to the host ----------------------------------------------------------------

def debug(message: str) -> None:
    _job.log(_job.LogLevel.DEBUG, str(message))


def info(message: str) -> None:
    _job.log(_job.LogLevel.INFO, str(message))


def warn(message: str) -> None:
    _job.log(_job.LogLevel.WARNING, str(message))


def error(message: str) -> None:
    _job.log(_job.LogLevel.ERROR, str(message))


def progress(done: int, total: Optional[int] = None, current: Optional[str] = None) -> None:
    _job.report_progress(done, total, current)


def succeeded(name: str, object_type: str = "object", micros: int = 0) -> _types.ObjectResult:
    return _types.ObjectResult(name, object_type, ObjectStatus.SUCCESS, None, micros)


def failed(name: str, reason: str, object_type: str = "object") -> _types.ObjectResult:
    return _types.ObjectResult(name, object_type, ObjectStatus.ERROR, reason, 0)


def record(results: Sequence[_types.ObjectResult]) -> None:
    """Object results; they count once the next checkpoint (or the step's end) is recorded."""
    if results:
        _job.record_objects(list(results))


def is_cancelled() -> bool:
    return _job.is_cancelled()


def save_checkpoint(state: Any) -> None:
    """Where the step stands, as any JSON value; `execute` gets it back after a crash."""
    _job.save_checkpoint(json.dumps(state, separators=(",", ":")).encode())


def _checkpoint(raw: Optional[bytes]) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise DataCorruption("the step's checkpoint is not the JSON this SDK saves") from None


# ---- buckets ------------------------------------------------------------------------------

class Bucket:
    """A granted key-value bucket; keys are text, values bytes (`str` values are UTF-8)."""

    def __init__(self, raw: _kv.Bucket):
        self._raw = raw

    @classmethod
    def open(cls, binding: str) -> "Bucket":
        return cls(_host(_kv.Bucket.open, binding))

    @classmethod
    def job_state(cls) -> "Bucket":
        """The job's own bucket, for what rollback needs; durable when a write returns."""
        return cls(_kv.Bucket.job_state())

    def get(self, key: str) -> Optional[bytes]:
        return _host(self._raw.get, key)

    def set(self, key: str, value: Any) -> None:
        _host(self._raw.set, key, _bytes(value))

    def delete(self, key: str) -> bool:
        return _host(self._raw.delete, key)

    def get_many(self, keys: Sequence[str]) -> List[Optional[bytes]]:
        return _host(self._raw.get_many, list(keys))

    def set_many(self, entries: Sequence[Tuple[str, Any]]) -> None:
        if entries:
            _host(self._raw.set_many, [(k, _bytes(v)) for k, v in entries])

    def delete_many(self, keys: Sequence[str]) -> int:
        return _host(self._raw.delete_many, list(keys)) if keys else 0

    def count(self, prefix: str = "") -> int:
        return _host(self._raw.count, prefix)

    def scan(self, prefix: str = "", after: Optional[str] = None, limit: int = 500) -> Tuple[List[Tuple[str, bytes]], Optional[str]]:
        """One page: its entries and the cursor of the next page (`None` at the end)."""
        page = _host(self._raw.scan, prefix, after, limit)
        return list(page.entries), page.next_cursor

    def pages(self, prefix: str = "", after: Optional[str] = None, limit: int = 500) -> Iterator[Tuple[List[Tuple[str, bytes]], Optional[str]]]:
        """Every page from `after` on, each with the cursor that follows it."""
        while True:
            entries, cursor = self.scan(prefix, after, limit)
            yield entries, cursor
            if cursor is None:
                return
            after = cursor


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


# ---- SQL and HTTP ---------------------------------------------------------------------

def _sql_value(v: Any) -> Any:
    if v is None:
        return _sql.SqlValue_Null()
    if isinstance(v, bool):
        return _sql.SqlValue_Boolean(v)
    if isinstance(v, int):
        return _sql.SqlValue_Int(v)
    if isinstance(v, float):
        return _sql.SqlValue_Float(v)
    if isinstance(v, str):
        return _sql.SqlValue_Text(v)
    if isinstance(v, bytes):
        return _sql.SqlValue_Bytes(v)
    return _sql.SqlValue_Json(json.dumps(v))


def _python_value(v: Any) -> Any:
    if isinstance(v, _sql.SqlValue_Null):
        return None
    if isinstance(v, _sql.SqlValue_Json):
        return json.loads(v.value)
    return v.value


class Sql:
    """A granted database. Statements of one call run in one transaction, committed when the
    call succeeds and at every checkpoint. Parameters and rows are plain Python values
    (None, bool, int, float, str, bytes; dicts and lists as JSON; timestamps as microseconds)."""

    def __init__(self, raw: _sql.Connection):
        self._raw = raw

    @classmethod
    def open(cls, binding: str) -> "Sql":
        return cls(_host(_sql.Connection.open, binding))

    def execute(self, statement: str, *params: Any) -> int:
        return _host(self._raw.execute, statement, [_sql_value(p) for p in params])

    def query(self, statement: str, *params: Any, page_size: int = 500) -> List[Dict[str, Any]]:
        """Every row, as dicts by column name."""
        page = _host(self._raw.query, statement, [_sql_value(p) for p in params], page_size)
        rows = []
        while True:
            names = [c.name for c in page.columns]
            rows.extend(dict(zip(names, map(_python_value, r))) for r in page.rows)
            if page.cursor is None:
                return rows
            page = _host(self._raw.fetch, page.cursor, page_size)


def http_send(binding: str, method: str, url: str, body: bytes = b"", headers: Sequence[Tuple[str, str]] = ()) -> _http.Response:
    return _host(_http.send, binding, _http.Request(method, url, list(headers), body))


# ---- the handler --------------------------------------------------------------------------

class Handler:
    """Subclass it: set `name`, `version`, `kinds`, `description`, implement the four calls."""

    name = "unnamed"
    version = "0.0.0"
    kinds: List[str] = []
    description = ""
    risk = RiskLevel.LOW
    risk_notes: List[str] = []

    def plan(self, spec: Spec) -> List[Step]:
        raise NotImplementedError

    def validate(self, spec: Spec, steps: List[Step]) -> List[Finding]:
        return []

    def execute(self, spec: Spec, step: Step, checkpoint: Any) -> str:
        raise NotImplementedError

    def execute_objects(self, spec: Spec, step: Step, names: List[str]) -> str:
        """Re-run `step` for exactly the objects `names` (at most 1,000 per call; empty means
        nothing is left): the operator retries what a partial step failed."""
        raise InvalidSpec(f"this handler cannot re-run single objects of step '{step.id}'").with_recovery(
            "retry-step", "retry or roll back the whole step instead")

    def rollback(self, spec: Spec, step: Step) -> str:
        raise StepFailed(f"step {step.id} cannot be rolled back")


def _guarded(call):
    """Run one call; any exception becomes the contract's error (uncaught ones with their
    type, message and traceback, which also go to the job log line by line)."""
    try:
        return call()
    except MigrationFailed as e:
        raise Err(e.to_contract())
    except Err:
        raise
    except Exception as e:  # noqa: BLE001 - every failure must reach the operator
        text = "".join(traceback.format_exception(e))
        for line in text.rstrip().splitlines():
            _job.log(_job.LogLevel.ERROR, line)
        message = f"uncaught {type(e).__name__}: {e}\n{text[-MAX_TRACEBACK_CHARS:]}"
        raise Err(_types.MigrationError(ErrorKind.STEP_FAILED, message, False, []))


def export(handler_class: type) -> type:
    """The class componentize-py exports (bind it to the name `Handler` in your `app.py`)."""
    handler = handler_class()

    class Export(exports.Handler):
        def describe(self) -> _types.PluginInfo:
            return _types.PluginInfo(handler.name, handler.version, list(handler.kinds), handler.description)

        def plan(self, spec: _types.MigrationSpec) -> _types.MigrationPlan:
            planned = _guarded(lambda: handler.plan(_spec(spec)))
            plan = planned if isinstance(planned, Plan) else Plan(list(planned))
            return _types.MigrationPlan([s._contract() for s in plan.steps], handler.risk, list(handler.risk_notes), plan.estimated_ms)

        def validate(self, spec: _types.MigrationSpec, plan: _types.MigrationPlan) -> _types.ValidationReport:
            findings = _guarded(lambda: handler.validate(_spec(spec), [_step(s) for s in plan.steps]))
            return _types.ValidationReport([_types.Finding(f.severity, f.code, f.message, f.step) for f in findings])

        def execute(self, spec: _types.MigrationSpec, step: _types.PlanStep, checkpoint: Optional[bytes], objects: Optional[List[str]]) -> _types.StepReport:
            if objects is not None:
                return _report(_guarded(lambda: handler.execute_objects(_spec(spec), _step(step), list(objects))))
            return _report(_guarded(lambda: handler.execute(_spec(spec), _step(step), _checkpoint(checkpoint))))

        def rollback(self, spec: _types.MigrationSpec, step: _types.PlanStep) -> _types.StepReport:
            return _report(_guarded(lambda: handler.rollback(_spec(spec), _step(step))))

    return Export
