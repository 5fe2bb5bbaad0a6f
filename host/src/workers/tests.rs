//! The queue's own rules, with a sink that only records: leases, fencing, expiry, stops.

use super::*;
use crate::model::{LogLevel, MigrationOptions, MigrationSpec, ObjectResult, PlanStep, StepKind};
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Default)]
struct Recorded {
    logs: Mutex<Vec<String>>,
    objects: Mutex<Vec<String>>,
    checkpoints: Mutex<Vec<Vec<u8>>>,
    commits: Mutex<u32>,
}

impl JobEvents for Recorded {
    fn log(&self, _: LogLevel, message: String) {
        self.logs.lock().unwrap().push(message);
    }
    fn progress(&self, _: u64, _: Option<u64>, _: Option<String>) {}
    fn objects(&self, results: Vec<ObjectResult>) -> Result<(), String> {
        let mut o = self.objects.lock().unwrap();
        o.extend(results.into_iter().map(|r| r.name));
        Ok(())
    }
    fn checkpoint(&self, data: Vec<u8>) {
        self.checkpoints.lock().unwrap().push(data);
    }
    fn is_cancelled(&self) -> bool {
        false
    }
}

impl TaskSink for Recorded {
    fn commit_now(&self) -> Result<(), String> {
        *self.commits.lock().unwrap() += 1;
        Ok(())
    }
    fn host_note(&self, message: String) {
        self.logs.lock().unwrap().push(format!("host: {message}"));
    }
}

fn offer(attempt: u32) -> TaskOffer {
    TaskOffer {
        job: "job1".into(),
        kind: TaskKind::Execute,
        attempt,
        spec: MigrationSpec {
            id: "job1".into(),
            kind: "copy".into(),
            parameters: serde_json::json!({}),
            source: serde_json::json!({}),
            target: serde_json::json!({}),
            bindings: vec![],
            options: MigrationOptions::default(),
        },
        step: PlanStep {
            id: "copy".into(),
            kind: StepKind::Migration,
            description: String::new(),
            depends_on: vec![],
            expected_objects: None,
            reversible: false,
            resumable: true,
            queue: Some("bulk".into()),
            estimated_duration_ms: None,
        },
        checkpoint: Some(b"40".to_vec()),
        objects: None,
    }
}

/// Run `offer` on a thread; the stop the run sees is `stop` (0 running, 1 asked, 2 forced).
fn spawn_run(
    queues: &Arc<WorkerQueues>,
    sink: &Arc<Recorded>,
    stop: &Arc<AtomicU8>,
    attempt: u32,
) -> std::thread::JoinHandle<Result<StepReport, MigrationError>> {
    let (q, sink, stop) = (queues.clone(), sink.clone(), stop.clone());
    std::thread::spawn(move || {
        let run_stop = move || match stop.load(Ordering::SeqCst) {
            0 => RunStop::Running,
            1 => RunStop::Asked("pause"),
            _ => RunStop::Forced,
        };
        let (end, settle) = q.run(offer(attempt), sink, &run_stop);
        drop(settle);
        end
    })
}

fn claim(q: &WorkerQueues, queue: &str) -> Option<ClaimedTask> {
    for _ in 0..200 {
        if let Some(t) = q.try_claim(&[queue.to_string()], "w1") {
            return Some(t);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn report_with(lease: &str, objects: &[&str], checkpoint: Option<&str>) -> WorkerReport {
    let objects = objects
        .iter()
        .map(|n| {
            serde_json::from_value(serde_json::json!({"name": n, "status": "success"})).unwrap()
        })
        .collect();
    WorkerReport {
        lease: lease.into(),
        objects,
        checkpoint: checkpoint.map(String::from),
        ..Default::default()
    }
}

#[test]
fn a_claimed_task_carries_its_checkpoint_and_only_its_lease_reports() {
    let q = Arc::new(WorkerQueues::default());
    let (sink, stop) = (Arc::new(Recorded::default()), Arc::new(AtomicU8::new(0)));
    let run = spawn_run(&q, &sink, &stop, 1);
    assert!(
        q.try_claim(&["other".into()], "w1").is_none(),
        "another queue"
    );
    let task = claim(&q, "bulk").expect("offered");
    assert_eq!(task.task, "job1.copy.execute.1");
    assert_eq!(task.checkpoint.as_deref(), Some("40"));
    assert!(
        q.try_claim(&["bulk".into()], "w2").is_none(),
        "held by one worker only"
    );

    let wrong = q.report(&task.task, "not-the-lease", report_with("x", &["a"], None));
    assert!(matches!(wrong, Err(WorkerError::Fenced(_))), "{wrong:?}");
    let beat = q
        .report(
            &task.task,
            &task.lease,
            report_with(&task.lease, &["a", "b"], Some("42")),
        )
        .expect("the holder reports");
    assert_eq!(beat.stop, None);
    assert_eq!(*sink.objects.lock().unwrap(), ["a", "b"]);
    assert_eq!(*sink.checkpoints.lock().unwrap(), [b"42".to_vec()]);
    assert_eq!(
        *sink.commits.lock().unwrap(),
        1,
        "durable before the answer"
    );

    let report = StepReport {
        summary: "copied".into(),
        outcome: Default::default(),
    };
    q.finish(&task.task, &task.lease, Ok(report), Duration::from_secs(5))
        .expect("recorded");
    assert_eq!(run.join().unwrap().unwrap().summary, "copied");
    let late = q.heartbeat(&task.task, &task.lease);
    assert!(
        matches!(late, Err(WorkerError::Fenced(_))),
        "ended: {late:?}"
    );
    assert!(q.open_counts().is_empty());
}

#[test]
fn a_lease_that_runs_out_ends_the_attempt_retryably_and_fences_its_worker() {
    let q = Arc::new(WorkerQueues::default());
    q.set_lease(Duration::from_millis(150));
    let (sink, stop) = (Arc::new(Recorded::default()), Arc::new(AtomicU8::new(0)));
    let run = spawn_run(&q, &sink, &stop, 3);
    let task = claim(&q, "bulk").expect("offered");
    // Heartbeats keep it.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(60));
        q.heartbeat(&task.task, &task.lease).expect("renewed");
    }
    let end = run.join().unwrap().expect_err("the lease ran out");
    assert!(end.retryable, "{end:?}");
    assert_eq!(end.kind, ErrorKind::DependencyUnavailable);
    let late = q.report(
        &task.task,
        &task.lease,
        report_with(&task.lease, &["z"], None),
    );
    assert!(matches!(late, Err(WorkerError::Fenced(_))), "{late:?}");
    assert!(
        sink.objects.lock().unwrap().is_empty(),
        "nothing of the fenced worker kept"
    );
    assert!(
        sink.logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("did not renew its lease")),
        "{:?}",
        sink.logs.lock().unwrap()
    );
}

#[test]
fn a_stop_reaches_the_worker_through_heartbeats_and_an_unclaimed_task_ends_at_once() {
    let q = Arc::new(WorkerQueues::default());
    let (sink, stop) = (Arc::new(Recorded::default()), Arc::new(AtomicU8::new(1)));
    let end = spawn_run(&q, &sink, &stop, 1).join().unwrap();
    assert_eq!(end.expect_err("stopped").kind, ErrorKind::Cancelled);
    assert!(q.try_claim(&["bulk".into()], "w1").is_none(), "withdrawn");

    stop.store(0, Ordering::SeqCst);
    let run = spawn_run(&q, &sink, &stop, 2);
    let task = claim(&q, "bulk").expect("offered");
    stop.store(1, Ordering::SeqCst);
    let mut told = None;
    for _ in 0..100 {
        told = q.heartbeat(&task.task, &task.lease).unwrap().stop;
        if told.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(told.as_deref(), Some("pause"));
    // The worker does not stop: the grace period ends and the task is taken from it.
    stop.store(2, Ordering::SeqCst);
    assert_eq!(
        run.join().unwrap().expect_err("forced").kind,
        ErrorKind::Cancelled
    );
    assert!(matches!(
        q.heartbeat(&task.task, &task.lease),
        Err(WorkerError::Fenced(_))
    ));
}
