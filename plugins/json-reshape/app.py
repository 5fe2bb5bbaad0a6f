"""json-reshape: reshape the JSON documents under a prefix, from the bucket bound as `source`
into the one bound as `target` (the same bucket may be bound as both, to reshape in place).

Parameters:
    prefix    only keys starting with this (required)
    rename    {"old": "new"} field renames
    drop      fields to remove
    defaults  {"field": value} set where a document lacks the field
    require   fields every document must have after reshaping; the dry run lists the
              documents that would break the rule, and execution refuses them

Steps: `reshape` (resumable, reversible: every target value it replaces is journaled first,
once) and `verify` (every target document equals its reshaped source).
"""

import json

from plover_sdk import (
    Bucket, DataCorruption, Finding, Handler, InvalidSpec, Severity, Spec, Step, StepKind,
    StepFailed, export, info, progress, record, save_checkpoint, succeeded,
)

# Rollback's journal in the job's own bucket: "journal/<key>" = "1" + old value, or "0".
JOURNAL = "journal/"
# The dry run names this many broken documents, then counts the rest.
MAX_FINDINGS = 50


class Shape:
    """What to do to each document, checked once from the parameters."""

    def __init__(self, spec: Spec):
        self.prefix = spec.param("prefix", kind=str)
        self.rename = spec.param("rename", {}, dict)
        self.drop = spec.param("drop", [], list)
        self.defaults = spec.param("defaults", {}, dict)
        self.require = spec.param("require", [], list)
        if not self.prefix:
            raise InvalidSpec("prefix must not be empty")
        for old, new in self.rename.items():
            if not isinstance(new, str) or not new:
                raise InvalidSpec(f"rename of {old!r} must name a field")

    def apply(self, key: str, raw: bytes) -> dict:
        """The reshaped document, or StepFailed naming the key and what is wrong."""
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise StepFailed(f"{key}: not JSON ({e})") from None
        if not isinstance(doc, dict):
            raise StepFailed(f"{key}: a JSON {type(doc).__name__}, not an object")
        out = {}
        for name, value in doc.items():
            if name in self.drop:
                continue
            out[self.rename.get(name, name)] = value
        for name, value in self.defaults.items():
            out.setdefault(name, value)
        missing = [f for f in self.require if f not in out]
        if missing:
            raise StepFailed(f"{key}: lacks {', '.join(missing)}")
        return out


def encode(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class JsonReshape(Handler):
    name = "json-reshape"
    version = "0.1.0"
    kinds = ["json-reshape"]
    description = "Reshapes JSON documents: rename, drop and default fields, check required ones"

    def plan(self, spec):
        spec.require_bindings("source", "target")
        shape = Shape(spec)
        total = Bucket.open("source").count(shape.prefix)
        return [
            Step("reshape", StepKind.MIGRATION, f"Reshape the {total} documents under {shape.prefix}",
                 expected_objects=total, reversible=True, resumable=True),
            Step("verify", StepKind.VERIFICATION, "Check every reshaped document",
                 after=["reshape"], expected_objects=total, reversible=True),
        ]

    def validate(self, spec, steps):
        shape = Shape(spec)
        findings, broken, seen = [], 0, 0
        for entries, _ in Bucket.open("source").pages(shape.prefix, limit=spec.batch_size):
            for key, raw in entries:
                seen += 1
                try:
                    shape.apply(key, raw)
                except StepFailed as e:
                    broken += 1
                    if broken <= MAX_FINDINGS:
                        findings.append(Finding(Severity.ERROR, "bad-document", e.message, "reshape"))
        if broken > MAX_FINDINGS:
            findings.append(Finding(Severity.ERROR, "bad-document", f"and {broken - MAX_FINDINGS} more", "reshape"))
        if seen == 0:
            findings.append(Finding(Severity.WARNING, "nothing-to-do", f"no key starts with {shape.prefix!r}"))
        info(f"checked {seen} documents, {broken} would not reshape")
        return findings

    def execute(self, spec, step, checkpoint):
        shape = Shape(spec)
        source, target = Bucket.open("source"), Bucket.open("target")
        after = checkpoint["after"] if checkpoint else None
        if after:
            info(f"{step.id} resuming after {after}")
        done = 0
        for entries, cursor in source.pages(shape.prefix, after, spec.batch_size):
            if step.id == "reshape":
                reshape_batch(shape, target, entries)
            else:
                verify_batch(shape, target, entries)
            done += len(entries)
            progress(done, None, entries[-1][0] if entries else None)
            if step.id == "reshape" and cursor is not None:
                save_checkpoint({"after": cursor})
        return f"{'reshaped' if step.id == 'reshape' else 'verified'} {done} documents"

    def rollback(self, spec, step):
        if step.id != "reshape":
            return "verification changes nothing"
        target, journal = Bucket.open("target"), Bucket.job_state()
        restored = deleted = 0
        while True:
            entries, _ = journal.scan(JOURNAL, None, 500)
            if not entries:
                break
            for entry, before in entries:
                key = entry[len(JOURNAL):]
                if before[:1] == b"1":
                    target.set(key, before[1:])
                    restored += 1
                else:
                    target.delete(key)
                    deleted += 1
            journal.delete_many([e for e, _ in entries])
        info(f"rollback of reshape: restored {restored} documents, deleted {deleted}")
        return f"restored {restored} documents, deleted {deleted}"


def reshape_batch(shape, target, entries):
    """Idempotent: a batch redone after a crash journals nothing twice and writes the same."""
    reshaped = [(key, encode(shape.apply(key, raw))) for key, raw in entries]
    keys = [k for k, _ in entries]
    journal = Bucket.job_state()
    known = journal.get_many([JOURNAL + k for k in keys])
    before = target.get_many(keys)
    journal.set_many([
        (JOURNAL + k, b"1" + old if old is not None else b"0")
        for k, seen, old in zip(keys, known, before) if seen is None
    ])
    target.set_many(reshaped)
    record([succeeded(k, "document") for k in keys])


def verify_batch(shape, target, entries):
    keys = [k for k, _ in entries]
    for (key, raw), now in zip(entries, target.get_many(keys)):
        if now is None or json.loads(now) != shape.apply(key, raw):
            raise DataCorruption(f"{key}: the target document is not the reshaped source")


Handler = export(JsonReshape)
