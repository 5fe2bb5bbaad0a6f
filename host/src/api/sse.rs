//! Live progress as Server-Sent Events.
//!
//! `GET /api/v1/migrations/{id}/events`: every change-feed event after the client's
//! `Last-Event-ID` (or `?after=`), each with `id: <seq>` so a reconnecting client misses
//! nothing and sees nothing twice; a `retry:` hint first; keep-alive comments every 15 s; and
//! once the job is final, one `final` event with the snapshot, after which the stream ends.
//!
//! `GET /api/v1/events`: state changes of every job, live only (no replay).

use super::AppState;
use super::auth::AsViewer;
use super::error::AppError;
use super::extract::{ApiPath, ApiQuery, blocking};
use crate::engine::handle::{JobHandle, LiveEvent};
use crate::engine::job::FeedEvent;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// What browsers should wait before reconnecting.
pub const RETRY_HINT: Duration = Duration::from_secs(2);

/// One Server-Sent Event as the stream frames it (the documented schema of each event of a
/// `text/event-stream` answer; its `data` is JSON text).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only: the frames are written by axum's `Event`
pub struct SseFrame {
    /// The event's sequence number (absent on `final`).
    id: Option<String>,
    /// The event's type: `state`, `step`, `progress`, `log`, `objects`, `audit`, `final`…
    event: Option<String>,
    /// The event as JSON.
    data: String,
    /// How long a client should wait before reconnecting, in milliseconds.
    retry: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterQuery {
    after: Option<u64>,
}

enum Phase {
    Hello,
    Streaming,
    Done,
}

/// One client following one job. Events come from the live fan-out of the commit path; the
/// store is read only to replay what was committed before the client came (or while it lagged).
struct Follow {
    state: Arc<AppState>,
    handle: Arc<JobHandle>,
    id: String,
    /// The last sequence number sent.
    after: u64,
    live: broadcast::Receiver<Arc<LiveEvent>>,
    /// Read the store until caught up, before listening live.
    replaying: bool,
    buffer: VecDeque<Event>,
    phase: Phase,
}

fn to_event(e: &FeedEvent) -> Event {
    Event::default()
        .id(e.seq.to_string())
        .event(e.body.kind())
        .json_data(e)
        .unwrap_or_else(|_| Event::default().comment("unserialisable event"))
}

#[utoipa::path(get, path = "/api/v1/migrations/{id}/events", tag = "events", operation_id = "migration_events",
    params(("id" = String, Path), ("after" = Option<u64>, Query, description = "Replay after this sequence number (or send Last-Event-ID)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "The last event seen: the stream continues after it")),
    responses((status = 200, description = "A text/event-stream: each event's `data` is one FeedEvent as JSON (its `id:` is the sequence number, its `event:` the type), then one `final` event whose data is the JobSnapshot", content_type = "text/event-stream", body = SseFrame)))]
pub async fn job_events(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<AfterQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let engine = s.engine.clone();
    let lookup = id.clone();
    let handle = blocking(move || Ok(engine.job_handle(&lookup)?)).await?;
    let last_event_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    AppError::bad_request("Last-Event-ID must be an event sequence number")
                })?,
        ),
        None => None,
    };
    let after = last_event_id.or(q.after).unwrap_or(0);
    // Subscribe before replaying, so nothing committed in between is missed.
    let live = handle.subscribe_live();
    let follow = Follow {
        state: s.clone(),
        handle,
        id,
        after,
        live,
        replaying: true,
        buffer: VecDeque::new(),
        phase: Phase::Hello,
    };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        loop {
            match f.phase {
                Phase::Done => return None,
                Phase::Hello => {
                    f.phase = Phase::Streaming;
                    return Some((
                        Ok(Event::default().retry(RETRY_HINT).comment("following")),
                        f,
                    ));
                }
                Phase::Streaming => {}
            }
            if let Some(e) = f.buffer.pop_front() {
                return Some((Ok(e), f));
            }
            if f.replaying {
                let engine = f.state.engine.clone();
                let (id, after) = (f.id.clone(), f.after);
                match tokio::task::spawn_blocking(move || engine.events_after(&id, after, 500))
                    .await
                {
                    Ok(Ok(events)) if !events.is_empty() => {
                        f.after = events.last().map(|e| e.seq).unwrap_or(f.after);
                        f.buffer.extend(events.iter().map(to_event));
                        continue;
                    }
                    Ok(Ok(_)) => f.replaying = false,
                    _ => return None,
                }
            }
            let (status, last) = f.handle.status_and_last_seq();
            if status.is_final() && last <= f.after {
                f.phase = Phase::Done;
                let snap = crate::engine::job::snapshot(&f.handle.record(), chrono::Utc::now());
                let event = Event::default()
                    .event("final")
                    .json_data(&snap)
                    .unwrap_or_else(|_| Event::default().event("final"));
                return Some((Ok(event), f));
            }
            match f.live.recv().await {
                Ok(e) if e.seq <= f.after => {}
                Ok(e) if e.seq == f.after + 1 && e.json.is_some() => {
                    f.after = e.seq;
                    f.buffer.push_back(
                        Event::default()
                            .id(e.seq.to_string())
                            .event(e.kind)
                            .data(e.json.clone().unwrap_or_default()),
                    );
                }
                // A gap follows lagging, or events another node committed: read them back
                // from the store.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => f.replaying = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events", operation_id = "all_events",
    responses((status = 200, description = "A text/event-stream: each `state` event's data is one StateChange as JSON; a `lagged` event says how many were missed", content_type = "text/event-stream", body = SseFrame)))]
pub async fn all_events(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let rx = s.engine.subscribe_changes();
    let stream = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if first {
            return Some((
                Ok(Event::default()
                    .retry(RETRY_HINT)
                    .comment("following all jobs")),
                (rx, false),
            ));
        }
        let event = match rx.recv().await {
            Ok(change) => Event::default()
                .event("state")
                .json_data(&change)
                .unwrap_or_else(|_| Event::default().event("state")),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                Event::default().event("lagged").data(n.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), (rx, false)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
