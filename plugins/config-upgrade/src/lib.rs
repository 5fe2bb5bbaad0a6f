//! `config-upgrade`: upgrades versioned JSON service configs stored under a prefix of the
//! bucket bound as `configs` to a newer schema version.
//!
//! Each document is a JSON object with a semver `schema_version`. The schema history this
//! handler knows:
//! - `2.0.0`: `timeout` (seconds) became `timeout_ms`; `db_host` and `db_port` moved into a
//!   `database` object.
//! - `3.0.0`: `features` changed from a list of names to a map of name to `true`, and
//!   `retries` (default 3) became required.
//!
//! Steps: `backup` copies every document byte for byte into the job-state bucket; `upgrade`
//! rewrites each document older than the target; `verify` checks every document is at the
//! target and equals the upgrade of its backup. Rolling back `upgrade` restores the backups
//! byte for byte.
//!
//! A document that cannot be upgraded fails the step, unless the job says
//! `"on_bad_document": "record"`: then it is recorded as a failed object and left as it is,
//! the rest are upgraded, `upgrade` ends `partial`, and `verify` checks such documents are
//! untouched. The operator fixes them in place and retries just those (`retry-objects`): each
//! is backed up again as it now is (so rollback restores the fixed document), then upgraded.

use plover_sdk::prelude::*;
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Which keys hold config documents.
    #[serde(default = "default_prefix")]
    prefix: String,
    /// The schema version to upgrade to, one of the versions in the history above.
    target_version: String,
    /// What a document that cannot be upgraded does to the step.
    #[serde(default)]
    on_bad_document: OnBadDocument,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum OnBadDocument {
    /// Fail the step (the default).
    #[default]
    Fail,
    /// Record the document as a failed object, leave it as it is and upgrade the rest; the
    /// step ends `partial`.
    Record,
}

fn default_prefix() -> String {
    "config/".into()
}

const VERSION_FIELD: &str = "schema_version";
const BACKUP_PREFIX: &str = "backup/";
const KNOWN_VERSIONS: [&str; 2] = ["2.0.0", "3.0.0"];

impl Params {
    fn target(&self) -> Result<Version, MigrationError> {
        let v = Version::parse(&self.target_version).map_err(|e| {
            MigrationError::invalid_spec(format!(
                "target_version '{}' is not semver: {e}",
                self.target_version
            ))
        })?;
        if !KNOWN_VERSIONS.contains(&v.to_string().as_str()) {
            return Err(MigrationError::invalid_spec(format!(
                "target_version {v} is not a schema version this handler knows ({})",
                KNOWN_VERSIONS.join(", ")
            )));
        }
        Ok(v)
    }
}

/// Why one document cannot be upgraded.
struct DocProblem {
    code: &'static str,
    message: String,
}

fn problem(code: &'static str, message: String) -> DocProblem {
    DocProblem { code, message }
}

fn doc_version(key: &str, doc: &Map<String, Value>) -> Result<Version, DocProblem> {
    let text = doc
        .get(VERSION_FIELD)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            problem(
                "no-version",
                format!("{key} has no string field '{VERSION_FIELD}'"),
            )
        })?;
    Version::parse(text).map_err(|e| {
        problem(
            "bad-version",
            format!("{key}: schema_version '{text}' is not semver: {e}"),
        )
    })
}

fn parse_doc(key: &str, bytes: &[u8]) -> Result<Map<String, Value>, DocProblem> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(problem(
            "not-an-object",
            format!("{key} is not a JSON object"),
        )),
        Err(e) => Err(problem("not-json", format!("{key} is not JSON: {e}"))),
    }
}

/// Upgrade one document to `target`. `Ok(None)` when it is already there.
fn upgrade_doc(key: &str, bytes: &[u8], target: &Version) -> Result<Option<Vec<u8>>, DocProblem> {
    let mut doc = parse_doc(key, bytes)?;
    let mut version = doc_version(key, &doc)?;
    if &version > target {
        return Err(problem(
            "newer-than-target",
            format!("{key} is at {version}, newer than the target {target}"),
        ));
    }
    if &version == target {
        return Ok(None);
    }
    if version.major < 2 {
        to_v2(key, &mut doc)?;
        version = Version::new(2, 0, 0);
    }
    if version.major < 3 && target.major >= 3 {
        to_v3(key, &mut doc)?;
        version = Version::new(3, 0, 0);
    }
    doc.insert(VERSION_FIELD.into(), Value::String(version.to_string()));
    Ok(Some(
        serde_json::to_vec(&doc).expect("a JSON object always serialises"),
    ))
}

fn to_v2(key: &str, doc: &mut Map<String, Value>) -> Result<(), DocProblem> {
    if let Some(timeout) = doc.remove("timeout") {
        let seconds = timeout
            .as_f64()
            .ok_or_else(|| problem("bad-field", format!("{key}: timeout is not a number")))?;
        doc.insert(
            "timeout_ms".into(),
            json!((seconds * 1000.0).round() as u64),
        );
    }
    let host = doc.remove("db_host");
    let port = doc.remove("db_port");
    if host.is_some() || port.is_some() {
        doc.insert("database".into(), json!({ "host": host, "port": port }));
    }
    Ok(())
}

fn to_v3(key: &str, doc: &mut Map<String, Value>) -> Result<(), DocProblem> {
    if let Some(features) = doc.remove("features") {
        let list = features
            .as_array()
            .ok_or_else(|| problem("bad-field", format!("{key}: features is not a list")))?;
        let mut map = Map::new();
        for f in list {
            let name = f.as_str().ok_or_else(|| {
                problem(
                    "bad-field",
                    format!("{key}: a feature name is not a string"),
                )
            })?;
            map.insert(name.into(), Value::Bool(true));
        }
        doc.insert("features".into(), Value::Object(map));
    }
    doc.entry("retries").or_insert(json!(3));
    Ok(())
}

#[derive(Serialize, Deserialize, Default)]
struct Cursor {
    after: Option<String>,
    done: u64,
    /// Documents recorded as failed so far, so a resumed step still ends `partial`.
    #[serde(default)]
    bad: u64,
}

fn read_cursor(checkpoint: Option<Vec<u8>>) -> Result<Cursor, MigrationError> {
    match checkpoint {
        None => Ok(Cursor::default()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| MigrationError::data_corruption(format!("unreadable checkpoint: {e}"))),
    }
}

/// Visit every entry under `prefix` in batches, resuming from and checkpointing `cursor`;
/// `visit` answers how many of a batch's documents it recorded as failed.
fn for_each_batch(
    bucket: &Bucket,
    prefix: &str,
    batch: u32,
    mut cursor: Cursor,
    total: Option<u64>,
    checkpoint: bool,
    mut visit: impl FnMut(Vec<(String, Vec<u8>)>) -> Result<u64, MigrationError>,
) -> Result<Cursor, MigrationError> {
    loop {
        if is_cancelled() {
            return Err(MigrationError::cancelled().retryable());
        }
        let page = bucket.scan(prefix, cursor.after.as_deref(), batch.max(1))?;
        if page.entries.is_empty() {
            break;
        }
        let last = page.entries.last().map(|(k, _)| k.clone());
        cursor.done += page.entries.len() as u64;
        cursor.bad += visit(page.entries)?;
        cursor.after = page.next_cursor;
        progress(cursor.done, total, last.as_deref());
        if checkpoint {
            save_checkpoint(&serde_json::to_vec(&cursor).expect("cursor serialises"));
        }
        if cursor.after.is_none() {
            break;
        }
    }
    Ok(cursor)
}

struct ConfigUpgrade;

impl Handler for ConfigUpgrade {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "config-upgrade".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kinds: vec!["config-upgrade".into()],
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }
    }

    fn plan(spec: MigrationSpec) -> Result<MigrationPlan, MigrationError> {
        spec.require_bindings(&["configs"])?;
        let params: Params = spec.params()?;
        let target = params.target()?;
        let total = Bucket::open("configs")?.count(&params.prefix)?;
        Ok(MigrationPlan::low_risk(vec![
            PlanStep::new(
                "backup",
                StepKind::Backup,
                format!("Back up {total} config documents byte for byte"),
            )
            .expecting(total)
            .reversible()
            .resumable(),
            PlanStep::new(
                "upgrade",
                StepKind::Migration,
                format!("Upgrade config documents to schema {target}"),
            )
            .after(&["backup"])
            .expecting(total)
            .reversible()
            .resumable(),
            PlanStep::new(
                "verify",
                StepKind::Verification,
                "Check every document is at the target schema",
            )
            .after(&["upgrade"])
            .expecting(total)
            .reversible()
            .resumable(),
        ])
        .with_risk(
            RiskLevel::Medium,
            "services read these documents; a bad upgrade breaks their start-up",
        ))
    }

    fn validate(
        spec: MigrationSpec,
        _plan: MigrationPlan,
    ) -> Result<ValidationReport, MigrationError> {
        spec.require_bindings(&["configs"])?;
        let params: Params = spec.params()?;
        let target = params.target()?;
        let mut findings = vec![];
        if spec.options.validation_level == ValidationLevel::Basic {
            return Ok(ValidationReport { findings });
        }
        // Broken documents block the job unless it asked to record them as failed objects.
        let severity = match params.on_bad_document {
            OnBadDocument::Fail => Severity::Error,
            OnBadDocument::Record => Severity::Warning,
        };
        let (mut current, mut problems) = (0u64, 0u64);
        let configs = Bucket::open("configs")?;
        for_each_batch(
            &configs,
            &params.prefix,
            spec.options.batch_size,
            Cursor::default(),
            None,
            false,
            |entries| {
                for (key, bytes) in entries {
                    match upgrade_doc(&key, &bytes, &target) {
                        Ok(Some(_)) => {}
                        Ok(None) => current += 1,
                        Err(p) => {
                            problems += 1;
                            if problems <= 20 {
                                findings.push(
                                    Finding::new(severity, p.code, p.message).for_step("upgrade"),
                                );
                            }
                        }
                    }
                }
                Ok(0)
            },
        )?;
        if current > 0 {
            findings.push(Finding::new(
                Severity::Info,
                "already-current",
                format!("{current} documents are already at {target} and will be skipped"),
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
        let target = params.target()?;
        let configs = Bucket::open("configs")?;
        let backups = Bucket::job_state();
        let cursor = read_cursor(checkpoint)?;
        let batch = spec.options.batch_size;
        match step.id.as_str() {
            "backup" => {
                let n = for_each_batch(
                    &configs,
                    &params.prefix,
                    batch,
                    cursor,
                    step.expected_objects,
                    true,
                    |entries| {
                        let copies: Vec<(String, Vec<u8>)> = entries
                            .into_iter()
                            .map(|(k, v)| (format!("{BACKUP_PREFIX}{k}"), v))
                            .collect();
                        backups.set_many(&copies)?;
                        Ok(0)
                    },
                )?
                .done;
                Ok(StepReport::new(format!("backed up {n} documents")))
            }
            "upgrade" => {
                let (mut upgraded, mut skipped) = (0u64, 0u64);
                let record_bad = params.on_bad_document == OnBadDocument::Record;
                let ended = for_each_batch(
                    &configs,
                    &params.prefix,
                    batch,
                    cursor,
                    step.expected_objects,
                    true,
                    |entries| {
                        let (mut writes, mut results, mut batch_bad) = (vec![], vec![], 0);
                        for (key, bytes) in entries {
                            match upgrade_doc(&key, &bytes, &target) {
                                Ok(Some(new)) => {
                                    results.push(ObjectResult::success(key.clone(), "config", 0));
                                    writes.push((key, new));
                                }
                                Ok(None) => results.push(ObjectResult::skipped(
                                    key,
                                    "config",
                                    format!("already at {target}"),
                                )),
                                Err(p) if record_bad => {
                                    batch_bad += 1;
                                    results.push(ObjectResult::failed(key, "config", p.message));
                                }
                                Err(p) => return Err(MigrationError::step_failed(p.message)),
                            }
                        }
                        upgraded += writes.len() as u64;
                        skipped += results
                            .iter()
                            .filter(|r| r.status == ObjectStatus::Skipped)
                            .count() as u64;
                        configs.set_many(&writes)?;
                        record_objects(&results);
                        Ok(batch_bad)
                    },
                )?;
                // Resumed from a checkpoint, `upgraded` and `skipped` count this call only;
                // `bad` comes with the checkpoint, so a resumed step still ends `partial`.
                let summary = format!("upgraded {upgraded} documents, {skipped} already current");
                let bad = ended.bad;
                if bad > 0 {
                    warn!("{bad} documents could not be upgraded and were recorded as failed");
                    return Ok(StepReport::partial(format!(
                        "{summary}, {bad} could not be upgraded"
                    )));
                }
                Ok(StepReport::new(summary))
            }
            "verify" => {
                let (mut checked, mut left) = (0u64, 0u64);
                let record_bad = params.on_bad_document == OnBadDocument::Record;
                for_each_batch(
                    &backups,
                    BACKUP_PREFIX,
                    batch,
                    Cursor::default(),
                    step.expected_objects,
                    false,
                    |entries| {
                        let keys: Vec<String> = entries
                            .iter()
                            .map(|(k, _)| k[BACKUP_PREFIX.len()..].to_string())
                            .collect();
                        let now = configs.get_many(&keys)?;
                        for ((key, (_, original)), now) in keys.iter().zip(&entries).zip(now) {
                            let expected = match upgrade_doc(key, original, &target) {
                                Ok(Some(new)) => new,
                                Ok(None) => original.clone(),
                                // Recorded as failed by `upgrade`: it must be as it was.
                                Err(_) if record_bad => {
                                    left += 1;
                                    original.clone()
                                }
                                Err(p) => return Err(MigrationError::data_corruption(p.message)),
                            };
                            if now.as_deref() != Some(expected.as_slice()) {
                                return Err(MigrationError::data_corruption(format!(
                                    "{key} is not the upgrade of its backup"
                                )));
                            }
                        }
                        checked += keys.len() as u64;
                        Ok(0)
                    },
                )?;
                let summary = if left > 0 {
                    format!(
                        "verified {} documents at schema {target}, {left} left as they were",
                        checked - left
                    )
                } else {
                    format!("verified {checked} documents at schema {target}")
                };
                info!("{summary}");
                Ok(StepReport::new(summary))
            }
            other => Err(MigrationError::invalid_spec(format!(
                "config-upgrade has no step '{other}'"
            ))),
        }
    }

    fn execute_objects(
        spec: MigrationSpec,
        step: PlanStep,
        objects: Vec<String>,
    ) -> Result<StepReport, MigrationError> {
        let params: Params = spec.params()?;
        let target = params.target()?;
        if step.id != "upgrade" {
            return Err(MigrationError::invalid_spec(format!(
                "config-upgrade records objects only in 'upgrade', not in '{}'",
                step.id
            )));
        }
        upgrade_again(&params, &target, &objects)
    }

    fn rollback(spec: MigrationSpec, step: PlanStep) -> Result<StepReport, MigrationError> {
        let configs = Bucket::open("configs")?;
        let backups = Bucket::job_state();
        let batch = spec.options.batch_size;
        match step.id.as_str() {
            "upgrade" => {
                let n = for_each_batch(
                    &backups,
                    BACKUP_PREFIX,
                    batch,
                    Cursor::default(),
                    None,
                    false,
                    |entries| {
                        let originals: Vec<(String, Vec<u8>)> = entries
                            .into_iter()
                            .map(|(k, v)| (k[BACKUP_PREFIX.len()..].to_string(), v))
                            .collect();
                        configs.set_many(&originals)?;
                        Ok(0)
                    },
                )?
                .done;
                Ok(StepReport::new(format!(
                    "restored {n} documents from backup"
                )))
            }
            "backup" => {
                // Deleting while scanning: always re-read the first page.
                let mut dropped = 0u64;
                loop {
                    let page = backups.scan(BACKUP_PREFIX, None, batch.max(1))?;
                    if page.entries.is_empty() {
                        break;
                    }
                    let keys: Vec<String> = page.entries.into_iter().map(|(k, _)| k).collect();
                    dropped += backups.delete_many(&keys)?;
                }
                Ok(StepReport::new(format!("dropped {dropped} backups")))
            }
            "verify" => Ok(StepReport::new("verification changes nothing")),
            other => Err(MigrationError::invalid_spec(format!(
                "config-upgrade has no step '{other}'"
            ))),
        }
    }
}

/// `retry-objects` of `upgrade`: upgrade exactly the documents `names` as they are now. One
/// still older than the target is backed up again first, so rollback restores the operator's
/// fixed document rather than the broken original; one already at the target (upgraded by an
/// interrupted earlier retry) keeps its backup, which is what the upgrade overwrote.
fn upgrade_again(
    params: &Params,
    target: &Version,
    names: &[String],
) -> Result<StepReport, MigrationError> {
    let configs = Bucket::open("configs")?;
    let backups = Bucket::job_state();
    info!("upgrading {} documents again", names.len());
    let ours: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with(&params.prefix))
        .cloned()
        .collect();
    let now = configs.get_many(&ours)?;
    let (mut results, mut writes, mut backed_up) = (vec![], vec![], vec![]);
    for (key, bytes) in ours.into_iter().zip(now) {
        let Some(bytes) = bytes else {
            results.push(ObjectResult::skipped(key, "config", "no longer exists"));
            continue;
        };
        match upgrade_doc(&key, &bytes, target) {
            Ok(Some(new)) => {
                backed_up.push((format!("{BACKUP_PREFIX}{key}"), bytes));
                results.push(ObjectResult::success(key.clone(), "config", 0));
                writes.push((key, new));
            }
            Ok(None) => results.push(ObjectResult::skipped(
                key,
                "config",
                format!("already at {target}"),
            )),
            Err(p) => results.push(ObjectResult::failed(key, "config", p.message)),
        }
    }
    for name in names.iter().filter(|n| !n.starts_with(&params.prefix)) {
        results.push(ObjectResult::skipped(
            name.clone(),
            "config",
            "not under this job's prefix",
        ));
    }
    // The backup first: a crash between the two leaves a backup of the unchanged document.
    backups.set_many(&backed_up)?;
    configs.set_many(&writes)?;
    record_objects(&results);
    let still_bad = results
        .iter()
        .filter(|r| r.status == ObjectStatus::Error)
        .count();
    let summary = format!(
        "upgraded {} of {} documents again, {still_bad} still bad",
        writes.len(),
        names.len()
    );
    Ok(StepReport::partial_if_failed(summary, &results))
}

plover_sdk::export_handler!(ConfigUpgrade);
