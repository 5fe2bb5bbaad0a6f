//! `kv-copy`: the session-store move. Copies every key under a prefix from the bucket bound as
//! `source` to the bucket bound as `target`, optionally renaming the prefix and editing JSON
//! values on the way.
//!
//! Steps:
//! 1. `copy` (migration, resumable, reversible): batches of `batch-size` keys. Before a batch
//!    is written, the old target value of every key (or its absence) goes to a journal in the
//!    job-state bucket, once: a resumed batch never journals its own writes. The scan cursor is
//!    checkpointed after each batch.
//! 2. `verify` (verification): re-reads both sides and compares counts and SHA-256 checksums.
//!
//! A value that cannot be transformed fails the step, unless the job says
//! `"on_bad_value": "record"`: then the key is recorded as a failed object (under its target
//! name), the rest is copied, `copy` ends `partial`, and `verify` leaves such keys out. After
//! fixing the values the operator retries just those keys (`retry-objects`).
//!
//! Rolling back `copy` replays the journal: keys that did not exist are deleted, overwritten
//! keys get their old bytes back, so the target ends exactly as it was.

use plover_sdk::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Instant;

/// Handler parameters (`parameters` in the spec).
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Params {
    /// Only keys starting with this prefix are copied.
    prefix: String,
    /// When set, the `prefix` part of each key is replaced by this in the target.
    rename_prefix: Option<String>,
    /// Fields to set in every value, which must then be a JSON object.
    set_fields: serde_json::Map<String, Value>,
    /// Fields to remove from every value, which must then be a JSON object.
    remove_fields: Vec<String>,
    /// What a value that cannot be transformed does to the step.
    on_bad_value: OnBadValue,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum OnBadValue {
    /// Fail the step (the default): nothing after the bad value's batch is copied.
    #[default]
    Fail,
    /// Record the key as a failed object and copy the rest; the step ends `partial`.
    Record,
}

impl Params {
    fn transforms_values(&self) -> bool {
        !self.set_fields.is_empty() || !self.remove_fields.is_empty()
    }

    fn target_key(&self, source_key: &str) -> String {
        match &self.rename_prefix {
            Some(new) => format!("{new}{}", &source_key[self.prefix.len()..]),
            None => source_key.to_string(),
        }
    }

    /// The source key a target key (an object's name) was copied from, if it is one of ours.
    fn source_key(&self, target_key: &str) -> Option<String> {
        let (from, to) = match &self.rename_prefix {
            Some(new) => (new.as_str(), self.prefix.as_str()),
            None => (self.prefix.as_str(), self.prefix.as_str()),
        };
        target_key
            .strip_prefix(from)
            .map(|rest| format!("{to}{rest}"))
    }

    fn target_value(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, MigrationError> {
        if !self.transforms_values() {
            return Ok(value.to_vec());
        }
        let mut doc: Value = serde_json::from_slice(value).map_err(|e| {
            MigrationError::step_failed(format!(
                "value of {key} is not JSON ({e}); cannot transform it"
            ))
        })?;
        let object = doc.as_object_mut().ok_or_else(|| {
            MigrationError::step_failed(format!(
                "value of {key} is not a JSON object; cannot transform it"
            ))
        })?;
        for field in &self.remove_fields {
            object.remove(field);
        }
        for (field, v) in &self.set_fields {
            object.insert(field.clone(), v.clone());
        }
        Ok(serde_json::to_vec(&doc).expect("a JSON value always serialises"))
    }
}

/// The `copy` step's checkpoint: where the scan stopped and how many keys were copied so far.
#[derive(Serialize, Deserialize, Default)]
struct CopyCheckpoint {
    cursor: Option<String>,
    copied: u64,
    /// Keys recorded as failed so far (`on_bad_value: record`).
    #[serde(default)]
    bad: u64,
}

const JOURNAL_PREFIX: &str = "w/";
const ABSENT: u8 = 0;
const PRESENT: u8 = 1;

struct KvCopy;

plover_sdk::declare_bindings!("source" => kv(read), "target" => kv(read_write));

impl Handler for KvCopy {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "kv-copy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec!["kv-copy".into(), "session-store-move".into()],
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }
    }

    fn plan(spec: MigrationSpec) -> Result<MigrationPlan, MigrationError> {
        spec.require_bindings(&["source", "target"])?;
        let params: Params = spec.params()?;
        if params.rename_prefix.is_some() && params.prefix.is_empty() {
            return Err(MigrationError::invalid_spec(
                "rename_prefix needs a non-empty prefix",
            ));
        }
        let total = Bucket::open("source")?.count(&params.prefix)?;
        let existing = Bucket::open("target")?
            .count(params.rename_prefix.as_deref().unwrap_or(&params.prefix))?;
        let mut plan = MigrationPlan::low_risk(vec![
            PlanStep::new(
                "copy",
                StepKind::Migration,
                format!("Copy {total} keys under '{}'", params.prefix),
            )
            .expecting(total)
            .reversible()
            .resumable(),
            PlanStep::new(
                "verify",
                StepKind::Verification,
                "Compare counts and checksums of source and target",
            )
            .after(&["copy"])
            .expecting(total)
            .reversible()
            .resumable(),
        ]);
        if existing > 0 {
            plan = plan.with_risk(
                RiskLevel::Medium,
                format!("the target already holds {existing} keys under the prefix; overwritten values are journaled for rollback"),
            );
        }
        Ok(plan)
    }

    fn validate(
        spec: MigrationSpec,
        _plan: MigrationPlan,
    ) -> Result<ValidationReport, MigrationError> {
        spec.require_bindings(&["source", "target"])?;
        let params: Params = spec.params()?;
        let mut findings = vec![];
        if spec.options.validation_level == ValidationLevel::Basic {
            return Ok(ValidationReport { findings });
        }
        // Bad values block the job unless it asked to record them as failed objects.
        let bad_value_severity = match params.on_bad_value {
            OnBadValue::Fail => Severity::Error,
            OnBadValue::Record => Severity::Warning,
        };
        let (source, target) = (Bucket::open("source")?, Bucket::open("target")?);
        let batch = spec.options.batch_size.max(1);
        let mut cursor = None;
        let (mut overwrites, mut untransformable) = (0u64, 0u64);
        loop {
            let page = source.scan(&params.prefix, cursor.as_deref(), batch)?;
            let keys: Vec<String> = page
                .entries
                .iter()
                .map(|(k, _)| params.target_key(k))
                .collect();
            let current = target.get_many(&keys)?;
            for ((key, value), old) in page.entries.iter().zip(current) {
                match params.target_value(key, value) {
                    Ok(new) => {
                        if old.is_some_and(|old| old != new) {
                            overwrites += 1;
                            if overwrites <= 10 {
                                findings.push(
                                    Finding::new(
                                        Severity::Warning,
                                        "target-key-exists",
                                        format!("{} exists in the target with another value and will be overwritten", params.target_key(key)),
                                    )
                                    .for_step("copy"),
                                );
                            }
                        }
                    }
                    Err(e) => {
                        untransformable += 1;
                        if untransformable <= 10 {
                            findings.push(
                                Finding::new(
                                    bad_value_severity,
                                    "value-not-transformable",
                                    e.message,
                                )
                                .for_step("copy"),
                            );
                        }
                    }
                }
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        if overwrites > 10 {
            findings.push(Finding::new(
                Severity::Warning,
                "target-key-exists",
                format!("{overwrites} target keys in all will be overwritten"),
            ));
        }
        if untransformable > 10 {
            findings.push(Finding::new(
                bad_value_severity,
                "value-not-transformable",
                format!("{untransformable} values in all cannot be transformed"),
            ));
        }
        Ok(ValidationReport { findings })
    }

    fn execute(
        spec: MigrationSpec,
        step: PlanStep,
        checkpoint: Option<Vec<u8>>,
    ) -> Result<StepReport, MigrationError> {
        let params: Params = spec.params()?;
        match step.id.as_str() {
            "copy" => copy(&spec, &params, &step, checkpoint),
            "verify" => verify(&spec, &params, &step),
            other => Err(MigrationError::invalid_spec(format!(
                "kv-copy has no step '{other}'"
            ))),
        }
    }

    fn execute_objects(
        spec: MigrationSpec,
        step: PlanStep,
        objects: Vec<String>,
    ) -> Result<StepReport, MigrationError> {
        let params: Params = spec.params()?;
        match step.id.as_str() {
            "copy" => copy_again(&params, &objects),
            other => Err(MigrationError::invalid_spec(format!(
                "kv-copy records objects only in 'copy', not in '{other}'"
            ))),
        }
    }

    fn rollback(_spec: MigrationSpec, step: PlanStep) -> Result<StepReport, MigrationError> {
        match step.id.as_str() {
            "copy" => undo_copy(),
            "verify" => Ok(StepReport::new("verification changes nothing")),
            other => Err(MigrationError::invalid_spec(format!(
                "kv-copy has no step '{other}'"
            ))),
        }
    }
}

fn copy(
    spec: &MigrationSpec,
    params: &Params,
    step: &PlanStep,
    checkpoint: Option<Vec<u8>>,
) -> Result<StepReport, MigrationError> {
    let (source, target, journal) = (
        Bucket::open("source")?,
        Bucket::open("target")?,
        Bucket::job_state(),
    );
    let mut state: CopyCheckpoint = match checkpoint {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            MigrationError::data_corruption(format!("unreadable copy checkpoint: {e}"))
        })?,
        None => CopyCheckpoint::default(),
    };
    if state.copied > 0 {
        info!("resuming copy after {} keys", state.copied);
    }
    let batch = spec.options.batch_size.max(1);
    loop {
        if is_cancelled() {
            return Err(MigrationError::cancelled().retryable());
        }
        let started = Instant::now();
        let page = source.scan(&params.prefix, state.cursor.as_deref(), batch)?;
        if page.entries.is_empty() {
            break;
        }
        let mut writes = Vec::with_capacity(page.entries.len());
        let mut bad = vec![];
        for (key, value) in &page.entries {
            match params.target_value(key, value) {
                Ok(v) => writes.push((params.target_key(key), v)),
                Err(e) if params.on_bad_value == OnBadValue::Record => bad.push(
                    ObjectResult::failed(params.target_key(key), "key", e.message),
                ),
                Err(e) => return Err(e),
            }
        }
        journal_old_values(&target, &journal, &writes)?;
        target.set_many(&writes)?;

        let per_object = started.elapsed().as_micros() as u64 / page.entries.len() as u64;
        let mut results: Vec<ObjectResult> = writes
            .iter()
            .map(|(key, _)| ObjectResult::success(key.clone(), "key", per_object))
            .collect();
        state.bad += bad.len() as u64;
        results.append(&mut bad);
        record_objects(&results);
        state.copied += writes.len() as u64;
        state.cursor = page.next_cursor;
        progress(
            state.copied + state.bad,
            step.expected_objects,
            page.entries.last().map(|(k, _)| k.as_str()),
        );
        save_checkpoint(&serde_json::to_vec(&state).expect("checkpoint serialises"));
        if state.cursor.is_none() {
            break;
        }
    }
    if state.bad > 0 {
        warn!(
            "{} values could not be transformed and were recorded as failed objects",
            state.bad
        );
        return Ok(StepReport::partial(format!(
            "copied {} keys, {} bad values recorded as failed",
            state.copied, state.bad
        )));
    }
    Ok(StepReport::new(format!("copied {} keys", state.copied)))
}

/// `retry-objects` of `copy`: copy again exactly the target keys `names` (the failed objects
/// of an earlier round), reading their source values as they are now. A key whose value is
/// still bad is recorded as failed again; one no longer in the source is skipped.
fn copy_again(params: &Params, names: &[String]) -> Result<StepReport, MigrationError> {
    let (source, target, journal) = (
        Bucket::open("source")?,
        Bucket::open("target")?,
        Bucket::job_state(),
    );
    info!("copying {} failed keys again", names.len());
    let mut results = Vec::with_capacity(names.len());
    let mut known = vec![];
    for name in names {
        match params.source_key(name) {
            Some(source_key) => known.push((name.clone(), source_key)),
            None => results.push(ObjectResult::skipped(
                name.clone(),
                "key",
                "not a key this job copies",
            )),
        }
    }
    let source_keys: Vec<String> = known.iter().map(|(_, s)| s.clone()).collect();
    let values = source.get_many(&source_keys)?;
    let mut writes = vec![];
    for ((name, source_key), value) in known.into_iter().zip(values) {
        match value {
            None => results.push(ObjectResult::skipped(
                name,
                "key",
                "no longer in the source",
            )),
            Some(value) => match params.target_value(&source_key, &value) {
                Ok(v) => writes.push((name, v)),
                Err(e) => results.push(ObjectResult::failed(name, "key", e.message)),
            },
        }
    }
    journal_old_values(&target, &journal, &writes)?;
    target.set_many(&writes)?;
    results.extend(
        writes
            .iter()
            .map(|(key, _)| ObjectResult::success(key.clone(), "key", 0)),
    );
    record_objects(&results);
    let still_bad = results
        .iter()
        .filter(|r| r.status == ObjectStatus::Error)
        .count();
    let summary = format!(
        "copied {} of {} keys again, {still_bad} still bad",
        writes.len(),
        names.len()
    );
    Ok(StepReport::partial_if_failed(summary, &results))
}

/// Journal what each target key held before this job first wrote it. A key already journaled
/// (by an earlier, interrupted run of the same batch) keeps its original entry.
fn journal_old_values(
    target: &Bucket,
    journal: &Bucket,
    writes: &[(String, Vec<u8>)],
) -> Result<(), MigrationError> {
    let journal_keys: Vec<String> = writes
        .iter()
        .map(|(k, _)| format!("{JOURNAL_PREFIX}{k}"))
        .collect();
    let already = journal.get_many(&journal_keys)?;
    let fresh: Vec<usize> = (0..writes.len())
        .filter(|&i| already[i].is_none())
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = fresh.iter().map(|&i| writes[i].0.clone()).collect();
    let old = target.get_many(&keys)?;
    let entries: Vec<(String, Vec<u8>)> = fresh
        .iter()
        .zip(old)
        .map(|(&i, old)| {
            let entry = match old {
                None => vec![ABSENT],
                Some(bytes) => {
                    let mut e = Vec::with_capacity(bytes.len() + 1);
                    e.push(PRESENT);
                    e.extend_from_slice(&bytes);
                    e
                }
            };
            (journal_keys[i].clone(), entry)
        })
        .collect();
    journal.set_many(&entries)?;
    Ok(())
}

/// Replay the journal batch by batch: restore, then forget. Safe to run again after a crash.
fn undo_copy() -> Result<StepReport, MigrationError> {
    let (target, journal) = (Bucket::open("target")?, Bucket::job_state());
    let (mut deleted, mut restored) = (0u64, 0u64);
    loop {
        let page = journal.scan(JOURNAL_PREFIX, None, 1000)?;
        if page.entries.is_empty() {
            break;
        }
        let mut to_delete = vec![];
        let mut to_restore = vec![];
        for (journal_key, entry) in &page.entries {
            let key = journal_key[JOURNAL_PREFIX.len()..].to_string();
            match entry.split_first() {
                Some((&PRESENT, old)) => to_restore.push((key, old.to_vec())),
                Some((&ABSENT, _)) => to_delete.push(key),
                _ => {
                    return Err(MigrationError::data_corruption(format!(
                        "bad journal entry for {key}"
                    )));
                }
            }
        }
        target.delete_many(&to_delete)?;
        target.set_many(&to_restore)?;
        deleted += to_delete.len() as u64;
        restored += to_restore.len() as u64;
        let done: Vec<String> = page.entries.into_iter().map(|(k, _)| k).collect();
        journal.delete_many(&done)?;
        progress(deleted + restored, None, None);
    }
    info!("rollback of copy: deleted {deleted} new keys, restored {restored} overwritten keys");
    Ok(StepReport::new(format!(
        "deleted {deleted} keys, restored {restored} keys"
    )))
}

fn verify(
    spec: &MigrationSpec,
    params: &Params,
    step: &PlanStep,
) -> Result<StepReport, MigrationError> {
    let (source, target) = (Bucket::open("source")?, Bucket::open("target")?);
    let batch = spec.options.batch_size.max(1);
    let (mut expected_digest, mut actual_digest) = (Sha256::new(), Sha256::new());
    let (mut count, mut first_mismatch, mut left_out) = (0u64, None, 0u64);
    let mut cursor = None;
    loop {
        if is_cancelled() {
            return Err(MigrationError::cancelled().retryable());
        }
        let page = source.scan(&params.prefix, cursor.as_deref(), batch)?;
        let keys: Vec<String> = page
            .entries
            .iter()
            .map(|(k, _)| params.target_key(k))
            .collect();
        let actual = target.get_many(&keys)?;
        for (((source_key, value), key), actual) in page.entries.iter().zip(&keys).zip(actual) {
            let expected = match params.target_value(source_key, value) {
                Ok(v) => v,
                // `copy` recorded it as a failed object and did not write it.
                Err(_) if params.on_bad_value == OnBadValue::Record => {
                    left_out += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            hash_entry(&mut expected_digest, key, Some(&expected));
            hash_entry(&mut actual_digest, key, actual.as_deref());
            if first_mismatch.is_none() && actual.as_deref() != Some(expected.as_slice()) {
                first_mismatch = Some(key.clone());
            }
        }
        count += keys.len() as u64;
        progress(
            count,
            step.expected_objects,
            keys.last().map(String::as_str),
        );
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let (expected, actual) = (
        hex(&expected_digest.finalize()),
        hex(&actual_digest.finalize()),
    );
    if let Some(key) = first_mismatch {
        return Err(MigrationError::data_corruption(format!(
            "target differs from source: checksum {actual} != {expected}; first differing key {key}"
        )));
    }
    let summary = if left_out > 0 {
        format!(
            "verified {} keys, sha256 {actual}; left out {left_out} bad values",
            count - left_out
        )
    } else {
        format!("verified {count} keys, sha256 {actual}")
    };
    info!("{summary}");
    Ok(StepReport::new(summary))
}

fn hash_entry(digest: &mut Sha256, key: &str, value: Option<&[u8]>) {
    digest.update((key.len() as u64).to_le_bytes());
    digest.update(key.as_bytes());
    match value {
        Some(v) => {
            digest.update([PRESENT]);
            digest.update((v.len() as u64).to_le_bytes());
            digest.update(v);
        }
        None => digest.update([ABSENT]),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

plover_sdk::export_handler!(KvCopy);
