//! One conformance suite for every job store: sled (embedded) and PostgreSQL (the local server,
//! each test in a schema of its own owned by an unprivileged role). Each check runs against
//! both backends, so a user sees the same records, lists, counts, change feed, object results
//! and job-state buckets whichever one a node is configured with.

use plover_host::connectors::{HostConnections, JobStateSpace, SledBuckets};
use plover_host::engine::job::{EventBody, FeedEvent, JobRecord};
use plover_host::engine::options::JobOptions;
use plover_host::engine::state::JobStatus;
use plover_host::engine::{Engine, NewMigration};
use plover_host::model::{ObjectResult, ObjectStatus};
use plover_host::runtime::{PluginRegistry, Runtime, RuntimeConfig};
use plover_host::store::{
    Commit, JobQuery, JobStore, ObjectSegment, PgJobStore, SledJobStore, StoreErrorKind,
    connect_postgres, pg_schema,
};
use plover_tests::artifacts;
use plover_tests::services::Schema;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A store and its job-state space, as a node opens them.
type Opened = (Arc<dyn JobStore>, Arc<dyn JobStateSpace>);

/// A store under test, with what the suite needs to poke at it from outside.
struct Backend {
    store: Arc<dyn JobStore>,
    job_state: Arc<dyn JobStateSpace>,
    /// Open the same data again, as a restarted node would.
    reopen: Box<dyn Fn() -> Opened>,
    /// Damage job `id`'s stored record so it cannot be read back.
    damage: Box<dyn Fn(&str)>,
    _keep: Box<dyn std::any::Any>,
}

fn sled_backend(quota: u64) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let db = plover_host::store::open_database(&dir.path().join("db")).unwrap();
    let store = SledJobStore::open_db(&db)
        .unwrap()
        .with_job_state_quota(quota);
    let job_state: Arc<dyn JobStateSpace> = Arc::new(store.job_state());
    let store: Arc<dyn JobStore> = Arc::new(store);
    // sled allows one opener per directory and process: "reopening" reads through the same
    // one (the server tests kill and restart real processes over sled).
    let reopen = {
        let (store, job_state) = (store.clone(), job_state.clone());
        Box::new(move || (store.clone(), job_state.clone()))
    };
    let damage = {
        let db = db.clone();
        Box::new(move |id: &str| {
            let tree = db.open_tree("plover/jobs").unwrap();
            tree.insert(format!("j/{id}"), &b"{not json"[..]).unwrap();
        })
    };
    Backend {
        store,
        job_state,
        reopen,
        damage,
        _keep: Box::new(dir),
    }
}

fn postgres_backend(quota: u64) -> Backend {
    let schema = Schema::new("store");
    let url = schema.store_url();
    let open = move |url: &str| {
        let pool = connect_postgres(url, 4).unwrap();
        pg_schema::migrate(&pool).unwrap();
        let store = PgJobStore::new(pool).with_job_state_quota(quota);
        let job_state: Arc<dyn JobStateSpace> = Arc::new(store.job_state());
        (Arc::new(store) as Arc<dyn JobStore>, job_state)
    };
    let (store, job_state) = open(&url);
    let reopen = {
        let url = url.clone();
        Box::new(move || open(&url))
    };
    let damage = {
        let name = schema.name.clone();
        Box::new(move |id: &str| {
            let mut c = plover_tests::services::postgres();
            c.execute(
                &format!("UPDATE {name}.jobs SET state = '\\x7b6e6f74'::bytea WHERE id = $1"),
                &[&id],
            )
            .unwrap();
        })
    };
    Backend {
        store,
        job_state,
        reopen,
        damage,
        _keep: Box::new(schema),
    }
}

/// Run `check` against every backend.
fn on_every_backend(check: impl Fn(&str, Backend)) {
    check("sled", sled_backend(1 << 20));
    check("postgres", postgres_backend(1 << 20));
}

fn registry() -> Arc<PluginRegistry> {
    static REG: OnceLock<Arc<PluginRegistry>> = OnceLock::new();
    REG.get_or_init(|| {
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let reg = PluginRegistry::new();
        reg.insert(rt.load_file(artifacts::STEPPER.as_ref()).unwrap())
            .unwrap();
        Arc::new(reg)
    })
    .clone()
}

/// A real record, as the engine makes it for a planned stepper job.
fn template() -> JobRecord {
    static RECORD: OnceLock<JobRecord> = OnceLock::new();
    RECORD
        .get_or_init(|| {
            let b = sled_backend(1 << 20);
            let engine = engine_on(&b);
            let job = engine
                .create(
                    NewMigration {
                        handler: "stepper".into(),
                        parameters: json!({ "steps": [{ "id": "a", "batches": 1 }] }),
                        grants: [("data".to_string(), "data".to_string())].into(),
                        ..Default::default()
                    },
                    "tester",
                )
                .unwrap();
            b.store.get(&job.id).unwrap().unwrap()
        })
        .clone()
}

fn engine_on(b: &Backend) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let buckets = SledBuckets::new(sled::open(dir.path()).unwrap());
    // The buckets' files must outlive this function; leaked on purpose for the test's length.
    std::mem::forget(dir);
    let connections = Arc::new(HostConnections::new(
        buckets,
        b.job_state.clone(),
        BTreeMap::new(),
        true,
    ));
    Engine::open(
        registry(),
        b.store.clone(),
        connections,
        JobOptions::default(),
    )
    .unwrap()
}

/// A record like the template's, with its own id, plugin, status and creation time.
fn record(n: i64, plugin: &str, status: JobStatus) -> JobRecord {
    let mut r = template();
    r.id = format!("job-{n:04}");
    r.plugin.name = plugin.into();
    r.status = status;
    r.created_at = chrono::DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap();
    r.next_seq = 1;
    r
}

fn commit(store: &dyn JobStore, r: &JobRecord, events: &[FeedEvent]) {
    store
        .commit(Commit {
            record: r,
            append: events,
            drop_oldest_logs: 0,
            segments: &[],
            fence: None,
        })
        .unwrap();
}

fn log(seq: u64, message: &str) -> FeedEvent {
    serde_json::from_value(json!({
        "seq": seq, "at": "2026-11-25T00:00:00Z", "type": "log",
        "level": "info", "source": "plugin", "message": message, "step": null
    }))
    .unwrap_or_else(|e| panic!("a log event: {e}"))
}

fn state_change(seq: u64) -> FeedEvent {
    FeedEvent {
        seq,
        at: chrono::Utc::now(),
        body: EventBody::State {
            from: Some(JobStatus::Planned),
            to: JobStatus::AwaitingApproval,
            reason: "checked".into(),
        },
    }
}

fn result(name: &str) -> ObjectResult {
    ObjectResult {
        name: name.into(),
        object_type: "key".into(),
        status: ObjectStatus::Success,
        error: None,
        duration_micros: 1,
    }
}

#[test]
fn a_record_reads_back_as_committed_and_survives_a_reopen() {
    on_every_backend(|name, b| {
        let mut r = record(1, "stepper", JobStatus::Planned);
        commit(&*b.store, &r, &[]);
        assert_eq!(
            serde_json::to_value(b.store.get(&r.id).unwrap().unwrap()).unwrap(),
            serde_json::to_value(&r).unwrap(),
            "{name}"
        );
        r.status = JobStatus::AwaitingApproval;
        r.warnings.push("changed".into());
        commit(&*b.store, &r, &[]);
        let (store, _) = (b.reopen)();
        let back = store.get(&r.id).unwrap().unwrap();
        assert_eq!(back.status, JobStatus::AwaitingApproval, "{name}");
        assert_eq!(back.warnings, vec!["changed".to_string()], "{name}");
        assert!(store.get("job-none").unwrap().is_none(), "{name}");
    });
}

#[test]
fn lists_page_newest_first_by_cursor_with_filters_and_counts_follow_every_move() {
    on_every_backend(|name, b| {
        let s = &*b.store;
        for n in 0..25 {
            let plugin = if n % 2 == 0 { "even" } else { "odd" };
            let status = if n % 5 == 0 {
                JobStatus::Completed
            } else {
                JobStatus::Planned
            };
            commit(s, &record(n, plugin, status), &[]);
        }
        let mut seen = vec![];
        let mut cursor = None;
        loop {
            let page = s
                .list(&JobQuery {
                    cursor: cursor.clone(),
                    limit: 7,
                    ..Default::default()
                })
                .unwrap();
            seen.extend(page.items.iter().map(|j| j.id.clone()));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let newest_first: Vec<String> = (0..25).rev().map(|n| format!("job-{n:04}")).collect();
        assert_eq!(seen, newest_first, "{name}: every job once, newest first");

        let even_planned = s
            .list(&JobQuery {
                status: Some(JobStatus::Planned),
                plugin: Some("even".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(even_planned.items.len(), 10, "{name}");
        assert!(even_planned.next_cursor.is_none(), "{name}");
        let skipped = s
            .list(&JobQuery {
                offset: 20,
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(skipped.items.len(), 5, "{name}: offset skips");

        assert_eq!(s.count(None, None).unwrap(), 25, "{name}");
        assert_eq!(s.count(Some(JobStatus::Completed), None).unwrap(), 5);
        assert_eq!(s.count(Some(JobStatus::Planned), Some("odd")).unwrap(), 10);
        let mut moved = record(1, "odd", JobStatus::Planned);
        moved.status = JobStatus::Failed;
        commit(s, &moved, &[]);
        assert_eq!(s.count(Some(JobStatus::Planned), Some("odd")).unwrap(), 9);
        assert_eq!(s.count(Some(JobStatus::Failed), None).unwrap(), 1);
        assert_eq!(
            s.ids_with_status(&[JobStatus::Failed, JobStatus::Completed], None)
                .unwrap()
                .len(),
            6,
            "{name}"
        );
        s.delete("job-0003", None).unwrap();
        assert_eq!(s.count(None, Some("odd")).unwrap(), 11, "{name}");
        assert!(s.get("job-0003").unwrap().is_none());
        let bogus = s
            .list(&JobQuery {
                cursor: Some("00".into()),
                limit: 5,
                ..Default::default()
            })
            .unwrap();
        assert!(bogus.items.is_empty(), "{name}: a cursor before every job");
    });
}

#[test]
fn events_and_logs_page_by_sequence_and_old_logs_fall_out_of_the_window() {
    on_every_backend(|name, b| {
        let s = &*b.store;
        let r = record(1, "stepper", JobStatus::Planned);
        let events: Vec<FeedEvent> = (1..=10)
            .map(|seq| {
                if seq % 2 == 0 {
                    state_change(seq)
                } else {
                    log(seq, &format!("line {seq}"))
                }
            })
            .collect();
        commit(s, &r, &events);
        let seqs = |v: Vec<FeedEvent>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(s.events_after(&r.id, 0, 4).unwrap()), [1, 2, 3, 4]);
        assert_eq!(seqs(s.events_after(&r.id, 8, 100).unwrap()), [9, 10]);
        assert_eq!(seqs(s.logs_after(&r.id, 1, 100).unwrap()), [3, 5, 7, 9]);
        assert!(s.events_after(&r.id, u64::MAX, 10).unwrap().is_empty());
        assert!(s.logs_after(&r.id, u64::MAX, 10).unwrap().is_empty());
        s.commit(Commit {
            record: &r,
            append: &[log(11, "newest")],
            drop_oldest_logs: 2,
            segments: &[],
            fence: None,
        })
        .unwrap();
        assert_eq!(
            seqs(s.logs_after(&r.id, 0, 100).unwrap()),
            [5, 7, 9, 11],
            "{name}: the two oldest log lines are gone"
        );
        assert_eq!(
            seqs(s.events_after(&r.id, 0, 100).unwrap()),
            [2, 4, 5, 6, 7, 8, 9, 10, 11],
            "{name}: other events stay"
        );
        match &s.logs_after(&r.id, 10, 1).unwrap()[0].body {
            EventBody::Log { message, .. } => assert_eq!(message, "newest"),
            other => panic!("{name}: {other:?}"),
        }
    });
}

#[test]
fn object_results_are_visible_only_once_committed_and_restaging_replaces_an_uncommitted_attempt() {
    on_every_backend(|name, b| {
        let s = &*b.store;
        let r = record(1, "stepper", JobStatus::Executing);
        commit(s, &r, &[]);
        let at = chrono::Utc::now();
        let names = |from: u64, n: usize| {
            s.objects_from(&r.id, from, n)
                .unwrap()
                .into_iter()
                .map(|o| (o.index, o.step, o.result.name))
                .collect::<Vec<_>>()
        };
        let batch: Vec<ObjectResult> = (0..3000).map(|i| result(&format!("k{i}"))).collect();
        s.stage_objects(&r.id, None, 0, 0, at, &batch).unwrap();
        assert!(names(0, 10).is_empty(), "{name}: staged is not visible");
        s.commit(Commit {
            record: &r,
            append: &[],
            drop_oldest_logs: 0,
            segments: &[ObjectSegment {
                first_index: 0,
                step: 0,
                first_staged: 0,
                count: 3000,
            }],
            fence: None,
        })
        .unwrap();
        let page = names(2995, 10);
        assert_eq!(page.len(), 5, "{name}");
        assert_eq!(page[0], (2995, 0, "k2995".to_string()));
        // A crashed attempt staged results 0..2 of step 1; the resumed one restages them.
        s.stage_objects(&r.id, None, 1, 0, at, &[result("old-a"), result("old-b")])
            .unwrap();
        s.stage_objects(&r.id, None, 1, 0, at, &[result("new-a")])
            .unwrap();
        s.stage_objects(&r.id, None, 1, 1, at, &[result("new-b")])
            .unwrap();
        s.commit(Commit {
            record: &r,
            append: &[],
            drop_oldest_logs: 0,
            segments: &[ObjectSegment {
                first_index: 3000,
                step: 1,
                first_staged: 0,
                count: 2,
            }],
            fence: None,
        })
        .unwrap();
        assert_eq!(
            names(2999, 10),
            vec![
                (2999, 0, "k2999".to_string()),
                (3000, 1, "new-a".to_string()),
                (3001, 1, "new-b".to_string())
            ],
            "{name}"
        );
        assert!(s.objects_from(&r.id, u64::MAX, 10).unwrap().is_empty());
        let (reopened, _) = (b.reopen)();
        assert_eq!(reopened.objects_from(&r.id, 0, 5000).unwrap().len(), 3002);
    });
}

#[test]
fn job_state_buckets_are_apart_keep_a_quota_and_go_with_their_job() {
    on_every_backend(|name, b| {
        let s = &*b.store;
        let r = record(1, "stepper", JobStatus::Executing);
        commit(s, &r, &[]);
        let mine = b.job_state.bucket(&r.id, true, None);
        let other = b.job_state.bucket("job-other", false, None);
        mine.set_many(&[
            ("journal/a".into(), b"1".to_vec()),
            ("journal/b".into(), b"2".to_vec()),
            ("journal\u{0}x".into(), b"nul".to_vec()),
            ("other".into(), b"3".to_vec()),
        ])
        .unwrap();
        other
            .set_many(&[("journal/a".into(), b"x".to_vec())])
            .unwrap();
        assert_eq!(mine.count("journal/").unwrap(), 2, "{name}");
        assert_eq!(mine.count("").unwrap(), 4, "{name}");
        let page = mine.scan("journal", None, 2).unwrap();
        assert_eq!(
            page.entries
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["journal\u{0}x", "journal/a"],
            "{name}: byte order"
        );
        let rest = mine
            .scan("journal", page.next_cursor.as_deref(), 10)
            .unwrap();
        assert_eq!(rest.entries.len(), 1, "{name}");
        assert_eq!(
            mine.get_many(&["journal/b".into(), "none".into(), "journal/b".into()])
                .unwrap(),
            vec![Some(b"2".to_vec()), None, Some(b"2".to_vec())]
        );
        assert_eq!(
            mine.delete_many(&["other".into(), "none".into()]).unwrap(),
            1
        );
        let err = mine
            .set_many(&[("big".into(), vec![0; 2 << 20])])
            .unwrap_err();
        assert!(err.is_quota(), "{name}: {err}");
        assert_eq!(mine.get_many(&["big".into()]).unwrap(), vec![None]);
        s.delete(&r.id, None).unwrap();
        assert_eq!(mine.count("").unwrap(), 0, "{name}: deleted with the job");
        assert_eq!(other.count("").unwrap(), 1, "{name}: another job's stays");
    });
}

#[test]
fn an_unreadable_record_is_quarantined_and_the_rest_is_served() {
    on_every_backend(|name, b| {
        let s = &*b.store;
        commit(s, &record(1, "stepper", JobStatus::Planned), &[]);
        commit(s, &record(2, "stepper", JobStatus::Planned), &[]);
        (b.damage)("job-0001");
        assert!(s.get("job-0001").unwrap().is_none(), "{name}");
        let q = s.quarantined().unwrap();
        assert_eq!(q.len(), 1, "{name}");
        assert!(
            q[0].reason.contains("unreadable"),
            "{name}: {}",
            q[0].reason
        );
        assert_eq!(s.count(None, None).unwrap(), 1, "{name}: out of the counts");
        assert!(s.get("job-0002").unwrap().is_some(), "{name}");
    });
}

#[test]
fn a_job_runs_to_completion_and_resumes_its_feed_the_same_on_every_backend() {
    on_every_backend(|name, b| {
        let engine = engine_on(&b);
        let job = engine
            .create(
                NewMigration {
                    handler: "stepper".into(),
                    parameters: json!({ "steps": [
                        { "id": "a", "batches": 3, "per_batch": 50 },
                        { "id": "b", "batches": 2, "per_batch": 10, "after": ["a"] }
                    ] }),
                    grants: [("data".to_string(), "data".to_string())].into(),
                    ..Default::default()
                },
                "tester",
            )
            .unwrap();
        engine.execute(&job.id, "tester").unwrap();
        let snap = engine.wait_idle(&job.id, Duration::from_secs(60)).unwrap();
        assert_eq!(
            snap.status,
            JobStatus::Completed,
            "{name}: {:?}",
            snap.errors
        );
        assert_eq!(snap.completed_objects, 170, "{name}");
        drop(engine);
        let (store, _) = (b.reopen)();
        let record = store.get(&job.id).unwrap().unwrap();
        assert_eq!(record.status, JobStatus::Completed, "{name}");
        assert_eq!(store.objects_from(&job.id, 0, 1000).unwrap().len(), 170);
        let events = store.events_after(&job.id, 0, 10_000).unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        let expected: Vec<u64> = (1..record.next_seq).collect();
        assert_eq!(
            seqs, expected,
            "{name}: every sequence number once, in order"
        );
    });
}

#[test]
fn a_database_migrated_by_a_newer_binary_is_refused_naming_both_versions() {
    let schema = Schema::new("newer");
    let pool = connect_postgres(&schema.store_url(), 2).unwrap();
    assert_eq!(pg_schema::migrate(&pool).unwrap(), 0, "a new database");
    assert_eq!(
        pg_schema::migrate(&pool).unwrap(),
        pg_schema::latest_version(),
        "migrating twice changes nothing"
    );
    let future = pg_schema::latest_version() + 7;
    schema
        .client()
        .execute(
            "INSERT INTO plover_schema_history (version, name, applied_on, checksum)
             VALUES ($1, 'from-the-future', '2030-01-01', '0')",
            &[&(future as i32)],
        )
        .unwrap();
    let err = pg_schema::migrate(&pool).unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Corrupt);
    assert!(
        err.message.contains(&format!("version {future}"))
            && err
                .message
                .contains(&format!("version {}", pg_schema::latest_version())),
        "{err}"
    );
}

/// The feed a model of the window predicts: every event but the log lines dropped.
fn expected_after(all: &[FeedEvent], dropped: &[u64], after: u64, logs_only: bool) -> Vec<u64> {
    all.iter()
        .filter(|e| e.seq > after && !dropped.contains(&e.seq))
        .filter(|e| !logs_only || matches!(e.body, EventBody::Log { .. }))
        .map(|e| e.seq)
        .collect()
}

#[test]
fn a_long_feed_reads_the_same_while_it_is_written_packed_and_its_oldest_logs_fall_out() {
    on_every_backend(|name, b| {
        let s = &*b.store;
        let mut r = record(1, "stepper", JobStatus::Executing);
        let id = r.id.clone();
        let mut all: Vec<FeedEvent> = vec![];
        let mut dropped: Vec<u64> = vec![];
        let seqs = |v: Vec<FeedEvent>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        let check = |all: &[FeedEvent], dropped: &[u64], when: &str| {
            let last = all.last().map_or(0, |e| e.seq);
            for after in [
                0,
                1,
                63,
                64,
                65,
                127,
                128,
                129,
                200,
                last.saturating_sub(1),
                last,
            ] {
                for limit in [1, 7, 100, 10_000] {
                    let mut want = expected_after(all, dropped, after, false);
                    want.truncate(limit);
                    assert_eq!(
                        seqs(s.events_after(&id, after, limit).unwrap()),
                        want,
                        "{name} {when}: events after {after}, {limit} at most"
                    );
                    let mut want = expected_after(all, dropped, after, true);
                    want.truncate(limit);
                    assert_eq!(
                        seqs(s.logs_after(&id, after, limit).unwrap()),
                        want,
                        "{name} {when}: logs after {after}, {limit} at most"
                    );
                }
            }
        };
        // A running job: commits of 7 events, every third a log line.
        for commit_no in 0..40 {
            let events: Vec<FeedEvent> = (0..7)
                .map(|i| {
                    let seq = commit_no * 7 + i + 1;
                    if seq % 3 == 0 {
                        log(seq, &format!("line {seq}"))
                    } else {
                        state_change(seq)
                    }
                })
                .collect();
            r.next_seq = events.last().unwrap().seq + 1;
            commit(s, &r, &events);
            all.extend(events);
        }
        check(&all, &dropped, "while running");
        // The window drops the 50 oldest log lines (some packed, some not), then 3 more with
        // the next commit's line.
        let logs: Vec<u64> = expected_after(&all, &[], 0, true);
        let next = all.len() as u64 + 1;
        s.commit(Commit {
            record: &r,
            append: &[log(next, "newest")],
            drop_oldest_logs: 50,
            segments: &[],
            fence: None,
        })
        .unwrap();
        all.push(log(next, "newest"));
        dropped.extend(&logs[..50]);
        check(&all, &dropped, "after 50 lines fell out");
        s.commit(Commit {
            record: &r,
            append: &[],
            drop_oldest_logs: 3,
            segments: &[],
            fence: None,
        })
        .unwrap();
        dropped.extend(&logs[50..53]);
        check(&all, &dropped, "after 3 more fell out");
        // It settles: whatever was loose is packed; nothing reads differently, nor after a reopen.
        r.status = JobStatus::Completed;
        let last = log(next + 1, "done");
        r.next_seq = next + 2;
        commit(s, &r, std::slice::from_ref(&last));
        all.push(last);
        check(&all, &dropped, "settled");
        let (reopened, _) = (b.reopen)();
        assert_eq!(
            seqs(reopened.events_after(&r.id, 0, 10_000).unwrap()),
            expected_after(&all, &dropped, 0, false),
            "{name}: reopened"
        );
        match &reopened.logs_after(&r.id, next, 1).unwrap()[0].body {
            EventBody::Log { message, .. } => assert_eq!(message, "done", "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        // Deleting the job takes every form of its feed with it.
        s.delete(&r.id, None).unwrap();
        assert!(s.events_after(&r.id, 0, 10).unwrap().is_empty(), "{name}");
        assert!(s.logs_after(&r.id, 0, 10).unwrap().is_empty(), "{name}");
    });
}

#[test]
fn a_reader_sees_every_event_once_in_order_while_events_are_packed() {
    on_every_backend(|name, b| {
        let store = b.store.clone();
        let mut r = record(2, "stepper", JobStatus::Executing);
        let writer = {
            let store = store.clone();
            let id = r.id.clone();
            std::thread::spawn(move || {
                for commit_no in 0..150u64 {
                    let events: Vec<FeedEvent> = (0..5)
                        .map(|i| {
                            let seq = commit_no * 5 + i + 1;
                            if seq % 2 == 0 {
                                log(seq, "line")
                            } else {
                                state_change(seq)
                            }
                        })
                        .collect();
                    r.next_seq = events.last().unwrap().seq + 1;
                    if commit_no == 149 {
                        r.status = JobStatus::Completed;
                    }
                    commit(&*store, &r, &events);
                }
                id
            })
        };
        let mut reads = 0;
        while !writer.is_finished() || reads == 0 {
            let seqs: Vec<u64> = store
                .events_after("job-0002", 0, 100_000)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect();
            let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, expected, "{name}: read {reads} has a gap or a repeat");
            reads += 1;
        }
        writer.join().unwrap();
        assert_eq!(
            store.events_after("job-0002", 0, 100_000).unwrap().len(),
            750,
            "{name}"
        );
    });
}

#[test]
fn a_finished_job_keeps_a_few_keys_in_sled_not_one_per_event() {
    // sled keeps in-memory metadata for each page, and a page holds at most 16 keys: what
    // a finished job keeps in keys is what it costs the node's memory for good.
    let dir = tempfile::tempdir().unwrap();
    let db = plover_host::store::open_database(&dir.path().join("db")).unwrap();
    let store = SledJobStore::open_db(&db).unwrap();
    let job_state: Arc<dyn JobStateSpace> = Arc::new(store.job_state());
    let b = Backend {
        store: Arc::new(store),
        job_state,
        reopen: Box::new(|| unreachable!()),
        damage: Box::new(|_| unreachable!()),
        _keep: Box::new(()),
    };
    let engine = engine_on(&b);
    let job = engine
        .create(
            NewMigration {
                handler: "stepper".into(),
                parameters: json!({ "steps": [
                    { "id": "a", "batches": 12, "per_batch": 3, "batch_ms": 30 },
                    { "id": "b", "batches": 12, "per_batch": 3, "batch_ms": 30, "after": ["a"] }
                ] }),
                grants: [("data".to_string(), "data".to_string())].into(),
                ..Default::default()
            },
            "tester",
        )
        .unwrap();
    engine.execute(&job.id, "tester").unwrap();
    let snap = engine.wait_idle(&job.id, Duration::from_secs(60)).unwrap();
    assert_eq!(snap.status, JobStatus::Completed, "{:?}", snap.errors);
    let events = b.store.events_after(&job.id, 0, 100_000).unwrap().len();
    let tree = db.open_tree("plover/jobs").unwrap();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for k in tree.iter().keys() {
        let k = k.unwrap();
        if k.windows(job.id.len()).any(|w| w == job.id.as_bytes()) {
            let kind = String::from_utf8_lossy(&k[..k.iter().position(|b| *b == b'/').unwrap()]);
            *by_kind.entry(kind.into_owned()).or_default() += 1;
        }
    }
    let of = |kinds: &[&str]| {
        kinds
            .iter()
            .map(|k| by_kind.get(*k).unwrap_or(&0))
            .sum::<usize>()
    };
    assert!(events >= 40, "the job made {events} events");
    assert!(
        of(&["e", "l", "E", "L"]) <= 2,
        "{events} events of a finished job keep these keys: {by_kind:?}"
    );
    assert_eq!(of(&["g"]), 2, "one result segment per step: {by_kind:?}");
    assert_eq!(
        of(&["j", "p", "m", "s", "ic", "is", "ip", "ips"]),
        8,
        "{by_kind:?}"
    );
}

#[test]
fn on_a_shared_store_a_write_without_the_current_lease_is_refused() {
    let schema = Schema::new("fence");
    let pool = connect_postgres(&schema.store_url(), 4).unwrap();
    pg_schema::migrate(&pool).unwrap();
    let a = PgJobStore::new(pool.clone()).for_node("node-a");
    let b = PgJobStore::new(pool.clone()).for_node("node-b");
    let mut sql = schema.client();
    let lease = |sql: &mut postgres::Client, owner: &str, epoch: i64| {
        sql.execute(
            "INSERT INTO job_leases (job_id, owner, epoch, expires_at)
             VALUES ('job-0001', $1, $2, now() + interval '1 minute')
             ON CONFLICT (job_id) DO UPDATE SET owner = $1, epoch = $2",
            &[&owner, &epoch],
        )
        .unwrap();
    };
    let mut r = record(1, "stepper", JobStatus::Executing);
    let write = |s: &PgJobStore, r: &JobRecord, fence: Option<u64>| {
        s.commit(Commit {
            record: r,
            append: &[log(r.next_seq, "line")],
            drop_oldest_logs: 0,
            segments: &[],
            fence,
        })
    };
    lease(&mut sql, "node-a", 1);
    r.next_seq = 1;
    write(&a, &r, Some(1)).unwrap();
    r.next_seq = 2;
    for (who, store, fence) in [
        ("b", &b, Some(1)),
        ("a without", &a, None),
        ("a old", &a, Some(0)),
    ] {
        let e = write(store, &r, fence).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Fenced, "{who}: {e}");
    }
    // Node b takes the job over: node a can write nothing more for it.
    lease(&mut sql, "node-b", 2);
    assert_eq!(
        write(&a, &r, Some(1)).unwrap_err().kind,
        StoreErrorKind::Fenced
    );
    let staged = a.stage_objects(&r.id, Some(1), 0, 0, chrono::Utc::now(), &[result("k")]);
    assert_eq!(staged.unwrap_err().kind, StoreErrorKind::Fenced);
    let journal = a.job_state().bucket(&r.id, true, Some(1));
    assert!(
        journal.set_many(&[("k".into(), vec![1])]).is_err(),
        "job state is fenced too"
    );
    assert_eq!(
        a.delete(&r.id, Some(1)).unwrap_err().kind,
        StoreErrorKind::Fenced
    );
    write(&b, &r, Some(2)).unwrap();
    let seqs: Vec<u64> = b
        .events_after(&r.id, 0, 10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        seqs,
        [1, 2],
        "one write of each holder, none of the fenced ones"
    );
    b.job_state()
        .bucket(&r.id, true, Some(2))
        .set_many(&[("k".into(), vec![2])])
        .unwrap();
    b.delete(&r.id, Some(2)).unwrap();
    assert!(b.get(&r.id).unwrap().is_none());
}

#[test]
fn nodes_starting_together_all_store_the_same_bootstrap_token_without_a_conflict_error() {
    use plover_host::api::auth::{Role, TokenInfo};
    use plover_host::api::token_records::{PgTokens, StoredToken, TokenRecords};
    let schema = Schema::new("tokens");
    let pool = connect_postgres(&schema.store_url(), 16).unwrap();
    pg_schema::migrate(&pool).unwrap();
    // Each round: eight "nodes" insert the same first admin token at once, as a cluster
    // whose nodes share PLOVER_BOOTSTRAP_TOKEN does on its first start.
    for round in 0..20 {
        let token = StoredToken {
            sha256: format!("{round:064}"),
            info: TokenInfo {
                name: format!("admin-{round}"),
                // Odd rounds store worker tokens, whose queues must come back from PostgreSQL.
                role: if round % 2 == 1 {
                    Role::Worker
                } else {
                    Role::Admin
                },
                queues: if round % 2 == 1 {
                    vec![format!("q-{round}"), "shared".to_string()]
                } else {
                    Vec::new()
                },
                created_at: chrono::Utc::now(),
            },
        };
        let barrier = std::sync::Barrier::new(8);
        let inserted: Vec<bool> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let tokens = PgTokens::new(pool.clone());
                        barrier.wait();
                        tokens
                            .insert(&token)
                            .expect("no error from a concurrent insert")
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(
            inserted.iter().filter(|i| **i).count(),
            1,
            "round {round}: exactly one node stored it"
        );
    }
    let tokens = PgTokens::new(pool);
    assert_eq!(tokens.all().unwrap().len(), 20);
    let worker = tokens.by_hash(&format!("{:064}", 3)).unwrap().unwrap();
    assert_eq!(worker.role, Role::Worker);
    assert_eq!(worker.queues, ["q-3", "shared"]);
    let admin = tokens.by_hash(&format!("{:064}", 4)).unwrap().unwrap();
    assert!(admin.queues.is_empty(), "{:?}", admin.queues);
}
