//! `plover worker --queue NAME -- COMMAND…`: run a program for every task of a worker queue,
//! so an existing tool joins without being rewritten.
//!
//! The program gets the task as JSON on stdin (and the basics in `PLOVER_*` variables). Each
//! line it prints is one JSON object, or plain text (an info log line):
//!
//! ```text
//! {"log": "copied batch 3", "level": "info"}
//! {"progress": {"done": 300, "total": 1000, "current": "key-299"}}
//! {"object": {"name": "key-299", "status": "success"}}      (or "error" with "error": "…")
//! {"checkpoint": "300"}        (text the next attempt resumes from; sent at once)
//! {"complete": {"summary": "copied 1000 keys", "outcome": "complete"}}
//! {"fail": {"kind": "dependency-unavailable", "message": "…", "retryable": true}}
//! ```
//!
//! Exit status 0 completes the task (unless it printed `fail`); 75 (EX_TEMPFAIL) fails it
//! retryably; anything else fails it with the last stderr line. Stderr lines become warning
//! logs. The worker heartbeats for the program; when the operator pauses or cancels, or the
//! lease is lost, the program is killed (its next attempt starts from the last checkpoint). A
//! program whose worker dies gets a broken pipe at its next line.

use super::client::{CliError, Client};
use super::output::say;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// A queue to take tasks from; repeatable (tried in order).
    #[arg(long = "queue", required = true)]
    queues: Vec<String>,
    /// The name shown in job logs (default: the token's name).
    #[arg(long)]
    name: Option<String>,
    /// Exit after this many tasks (default: run until stopped).
    #[arg(long)]
    max_tasks: Option<u64>,
    /// The program to run for each task, and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// How long one claim waits on the server for a task.
const CLAIM_WAIT_MS: u64 = 20_000;
/// How often what the program printed is sent (a checkpoint is sent at once).
const REPORT_EVERY: Duration = Duration::from_millis(250);
/// Lines sent in one report at most.
const REPORT_LINES: usize = 2_000;

pub fn run(client: &Client, args: WorkerArgs) -> Result<ExitCode, CliError> {
    let mut done = 0;
    loop {
        let body = json!({ "queues": args.queues, "worker": args.name, "wait_ms": CLAIM_WAIT_MS });
        let claim = client.request(reqwest::Method::POST, "/workers/claim");
        match client.try_send(claim.json(&body)) {
            // Unreachable (a restart): try again shortly.
            Err(e) => {
                eprintln!("plover worker: {}; retrying", e.0);
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(Err(e)) => return Err(CliError(e.message())),
            Ok(Ok(Value::Null)) => {}
            Ok(Ok(task)) => {
                let outcome = run_task(client, &args.command, &task)?;
                say!("{}: {outcome}", task["task"].as_str().unwrap_or("?"));
                done += 1;
                if args.max_tasks.is_some_and(|max| done >= max) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
}

enum Line {
    Out(String),
    Err(String),
}

/// What the program's lines added up to since the last report.
#[derive(Default)]
struct Pending {
    logs: Vec<Value>,
    objects: Vec<Value>,
    progress: Option<Value>,
    checkpoint: Option<String>,
}

impl Pending {
    fn len(&self) -> usize {
        self.logs.len() + self.objects.len()
    }
    fn is_empty(&self) -> bool {
        self.len() == 0 && self.progress.is_none() && self.checkpoint.is_none()
    }
}

/// How the task ends, from the program's own words or its exit status.
enum End {
    Complete(Value),
    Fail(Value),
}

/// One task: run the program, relay its lines, end the task. Returns a word on how it went.
fn run_task(client: &Client, command: &[String], task: &Value) -> Result<String, CliError> {
    let id = task["task"].as_str().unwrap_or_default().to_string();
    let lease = task["lease"].as_str().unwrap_or_default().to_string();
    let lease_ms = task["lease_ms"].as_u64().unwrap_or(15_000);
    let mut child = spawn(command, task)?;
    let (tx, rx) = mpsc::channel();
    let readers = [
        relay(child.stdout.take(), tx.clone(), Line::Out),
        relay(child.stderr.take(), tx, Line::Err),
    ];
    let path = |what: &str| format!("/workers/tasks/{id}/{what}");
    let mut pending = Pending::default();
    let mut said: Option<End> = None;
    let mut last_stderr = String::new();
    let mut last_sent = Instant::now();
    let mut last_contact = Instant::now();
    loop {
        let line = rx.recv_timeout(Duration::from_millis(50));
        let finished = matches!(line, Err(mpsc::RecvTimeoutError::Disconnected));
        match line {
            Ok(Line::Out(text)) => take_line(&text, &mut pending, &mut said),
            Ok(Line::Err(text)) => {
                pending
                    .logs
                    .push(json!({ "level": "warning", "message": text }));
                last_stderr = text;
            }
            Err(_) => {}
        }
        let due = pending.checkpoint.is_some()
            || pending.len() >= REPORT_LINES
            || (finished && !pending.is_empty())
            || (!pending.is_empty() && last_sent.elapsed() >= REPORT_EVERY);
        let beat = if due {
            let mut body = json!({
                "lease": lease, "logs": pending.logs, "objects": pending.objects,
                "progress": pending.progress, "checkpoint": pending.checkpoint,
            });
            if body["progress"].is_null() {
                body.as_object_mut().map(|o| o.remove("progress"));
            }
            pending = Pending::default();
            last_sent = Instant::now();
            Some(
                client.try_send(
                    client
                        .request(reqwest::Method::POST, &path("report"))
                        .json(&body),
                ),
            )
        } else if last_contact.elapsed() >= Duration::from_millis(lease_ms / 3) {
            let body = json!({ "lease": lease });
            Some(
                client.try_send(
                    client
                        .request(reqwest::Method::POST, &path("heartbeat"))
                        .json(&body),
                ),
            )
        } else {
            None
        };
        match beat {
            None => {}
            Some(Ok(Ok(answer))) => {
                last_contact = Instant::now();
                if let Some(stop) = answer["stop"].as_str() {
                    kill(&mut child);
                    let message = format!("stopped by the host ({stop})");
                    let fail = json!({ "kind": "cancelled", "message": message });
                    end_task(client, &path("fail"), &lease, fail)?;
                    return Ok(format!("stopped ({stop})"));
                }
            }
            Some(Ok(Err(e))) if e.status == reqwest::StatusCode::CONFLICT => {
                kill(&mut child);
                return Ok(format!("lease lost: {}", e.message()));
            }
            Some(Ok(Err(e))) => {
                kill(&mut child);
                let fail = json!({ "kind": "step-failed", "message": e.message() });
                end_task(client, &path("fail"), &lease, fail)?;
                return Ok(format!("report refused: {}", e.message()));
            }
            // The server is away for a moment: the lease may still hold, so keep going.
            Some(Err(e)) => eprintln!("plover worker: {}", e.0),
        }
        if finished {
            break;
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait()?;
    let (what, body) = match (said, status.code()) {
        (Some(End::Fail(f)), _) => ("fail", f),
        (Some(End::Complete(c)), Some(0)) => ("complete", c),
        (None, Some(0)) => (
            "complete",
            json!({ "summary": format!("{} exited 0", command[0]) }),
        ),
        (_, code) => {
            let message = match code {
                Some(c) => format!("{} exited with status {c}", command[0]),
                None => format!("{} was killed by a signal", command[0]),
            };
            let message = if last_stderr.is_empty() {
                message
            } else {
                format!("{message}: {last_stderr}")
            };
            let fail =
                json!({ "kind": "step-failed", "message": message, "retryable": code == Some(75) });
            ("fail", fail)
        }
    };
    end_task(client, &path(what), &lease, body)?;
    Ok(what.to_string() + "d")
}

fn end_task(client: &Client, path: &str, lease: &str, mut body: Value) -> Result<(), CliError> {
    if let Some(o) = body.as_object_mut() {
        o.insert("lease".into(), json!(lease));
    }
    match client.try_send(client.request(reqwest::Method::POST, path).json(&body))? {
        Ok(_) => Ok(()),
        // Fenced meanwhile: another attempt has the step; nothing to do.
        Err(e) if e.status == reqwest::StatusCode::CONFLICT => Ok(()),
        Err(e) => Err(CliError(e.message())),
    }
}

/// Read one line the program printed into `pending` (or the end it announced).
fn take_line(text: &str, pending: &mut Pending, said: &mut Option<End>) {
    let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_str(text).ok();
    let Some(mut line) = parsed else {
        pending
            .logs
            .push(json!({ "level": "info", "message": text }));
        return;
    };
    if let Some(message) = line.remove("log") {
        let level = line.remove("level").unwrap_or(json!("info"));
        pending
            .logs
            .push(json!({ "level": level, "message": message }));
    } else if let Some(p) = line.remove("progress") {
        pending.progress = Some(p);
    } else if let Some(o) = line.remove("object") {
        pending.objects.push(o);
    } else if let Some(c) = line.remove("checkpoint") {
        pending.checkpoint = Some(c.as_str().map_or_else(|| c.to_string(), str::to_string));
    } else if let Some(c) = line.remove("complete") {
        *said = Some(End::Complete(c));
    } else if let Some(f) = line.remove("fail") {
        *said = Some(End::Fail(f));
    } else {
        pending
            .logs
            .push(json!({ "level": "info", "message": text }));
    }
}

fn spawn(command: &[String], task: &Value) -> Result<Child, CliError> {
    let text = |k: &str| task[k].as_str().unwrap_or_default().to_string();
    let mut c = Command::new(&command[0]);
    c.args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PLOVER_TASK", text("task"))
        .env("PLOVER_JOB", text("job"))
        .env("PLOVER_QUEUE", text("queue"))
        .env("PLOVER_TASK_KIND", text("kind"))
        .env("PLOVER_ATTEMPT", task["attempt"].to_string())
        .env(
            "PLOVER_STEP",
            task["step"]["id"].as_str().unwrap_or_default(),
        )
        .env("PLOVER_PARAMETERS", task["spec"]["parameters"].to_string());
    if let Some(cp) = task["checkpoint"].as_str() {
        c.env("PLOVER_CHECKPOINT", cp);
    }
    let mut child = c
        .spawn()
        .map_err(|e| CliError(format!("cannot run {}: {e}", command[0])))?;
    if let Some(mut stdin) = child.stdin.take() {
        // On a thread: a program that does not read its stdin must not stop the worker.
        let task = task.to_string();
        std::thread::spawn(move || {
            let _ = writeln!(stdin, "{task}");
        });
    }
    Ok(child)
}

fn relay<R: std::io::Read + Send + 'static>(
    from: Option<R>,
    tx: mpsc::Sender<Line>,
    wrap: fn(String) -> Line,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Some(from) = from else { return };
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if tx.send(wrap(line)).is_err() {
                return;
            }
        }
    })
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
