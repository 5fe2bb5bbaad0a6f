//! Requests forwarded between nodes: an operator's action on a job another node holds is a
//! row in `job_requests` for that node, announced on [`super::REQUESTS_CHANNEL`]. The owner
//! carries it out and writes the answer in one transaction that keeps the row locked, so a
//! request is answered once, or withdrawn by its sender once it waited long enough, never both.

use crate::engine::Request;
use crate::engine::ownership::Forwarded;
use crate::store::{PgPool, StoreError};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

fn failure(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("{what}: {e}"))
}

/// Carries out a request here: the answer to send back.
pub type Apply = Box<dyn Fn(&str, Request, &str) -> Forwarded + Send + Sync>;

/// Wakes the senders waiting for answers when one arrives.
#[derive(Default)]
pub struct Answers {
    arrived: Mutex<u64>,
    signal: Condvar,
}

impl Answers {
    pub fn arrived(&self) {
        *self.arrived.lock().expect("answers lock") += 1;
        self.signal.notify_all();
    }

    /// Wait until an answer arrives (any) or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let seen = self.arrived.lock().expect("answers lock");
        let before = *seen;
        let _ = self
            .signal
            .wait_timeout_while(seen, timeout, |n| *n == before);
    }
}

/// Send `request` on `job` to node `target` and wait at most `wait` for its answer. A request
/// not taken up by then is withdrawn (it will not be carried out later).
pub fn forward(
    pool: &PgPool,
    answers: &Answers,
    job: &str,
    target: &str,
    request: Request,
    actor: &str,
    wait: Duration,
) -> Result<Forwarded, StoreError> {
    let what = "forwarding a request";
    let mut client = pool.get().map_err(|e| failure(what, e))?;
    let id: i64 = {
        let mut tx = client.transaction().map_err(|e| failure(what, e))?;
        let id = tx
            .query_one(
                "INSERT INTO job_requests (job_id, target, action, actor)
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[&job, &target, &request.as_str().as_str(), &actor],
            )
            .map_err(|e| failure(what, e))?
            .get(0);
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&super::REQUESTS_CHANNEL, &target],
        )
        .map_err(|e| failure(what, e))?;
        tx.commit().map_err(|e| failure(what, e))?;
        id
    };
    let started = Instant::now();
    loop {
        let answer: Option<Option<Vec<u8>>> = client
            .query_opt("SELECT answer FROM job_requests WHERE id = $1", &[&id])
            .map_err(|e| failure(what, e))?
            .map(|r| r.get(0));
        match answer {
            Some(Some(bytes)) => return decode(&bytes),
            // The job was deleted meanwhile, its requests with it.
            None => return Ok(Forwarded::NotTaken),
            Some(None) => {}
        }
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        // Woken by any answer; looked at again at least every quarter second.
        answers.wait(left.min(Duration::from_millis(250)));
    }
    // Withdraw; this waits for an owner that is answering right now, and then finds the answer.
    let withdrawn = client
        .execute(
            "DELETE FROM job_requests WHERE id = $1 AND answered_at IS NULL",
            &[&id],
        )
        .map_err(|e| failure(what, e))?;
    if withdrawn == 1 {
        return Ok(Forwarded::NotTaken);
    }
    match client
        .query_opt("SELECT answer FROM job_requests WHERE id = $1", &[&id])
        .map_err(|e| failure(what, e))?
        .and_then(|r| r.get::<_, Option<Vec<u8>>>(0))
    {
        Some(bytes) => decode(&bytes),
        None => Ok(Forwarded::NotTaken),
    }
}

fn decode(bytes: &[u8]) -> Result<Forwarded, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::corrupt(format!("an answer from another node: {e}")))
}

/// Carry out every request waiting for node `node`, oldest first, with `apply`.
pub fn answer_waiting(pool: &PgPool, node: &str, apply: &Apply) -> Result<usize, StoreError> {
    let what = "answering forwarded requests";
    let mut answered = 0;
    loop {
        let mut client = pool.get().map_err(|e| failure(what, e))?;
        let mut tx = client.transaction().map_err(|e| failure(what, e))?;
        let Some(row) = tx
            .query_opt(
                "SELECT id, job_id, action, actor FROM job_requests
                 WHERE target = $1 AND answered_at IS NULL
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&node],
            )
            .map_err(|e| failure(what, e))?
        else {
            return Ok(answered);
        };
        let (id, job, action, actor): (i64, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let answer = match Request::parse(&action) {
            Some(request) => apply(&job, request, &actor),
            None => Forwarded::Refused(crate::engine::ownership::RemoteRefusal {
                status: 400,
                code: "bad-request".into(),
                message: format!("node {node} does not know the request '{action}'"),
                details: serde_json::Value::Null,
            }),
        };
        tx.execute(
            "UPDATE job_requests SET answered_at = now(), answer = $2 WHERE id = $1",
            &[&id, &serde_json::to_vec(&answer).expect("serialises")],
        )
        .map_err(|e| failure(what, e))?;
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&super::ANSWERS_CHANNEL, &id.to_string()],
        )
        .map_err(|e| failure(what, e))?;
        tx.commit().map_err(|e| failure(what, e))?;
        answered += 1;
    }
}

/// Forget answered requests older than `age`, and unanswered ones for nodes long gone.
pub fn prune(pool: &PgPool, age: Duration) -> Result<(), StoreError> {
    pool.get()
        .map_err(|e| failure("pruning requests", e))?
        .execute(
            "DELETE FROM job_requests WHERE requested_at < now() - $1 * interval '1 second'",
            &[&age.as_secs_f64()],
        )
        .map_err(|e| failure("pruning requests", e))?;
    Ok(())
}
