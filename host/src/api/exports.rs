//! `GET /api/v1/migrations/{id}/export/{file}`: a job's log lines or object results as CSV or
//! JSON Lines (`logs.csv`, `logs.jsonl`, `objects.csv`, `objects.jsonl`), for the console's
//! download buttons and for scripts. Streamed a page at a time from the store (read on a
//! blocking thread, a few pages ahead of the client): memory stays flat whatever the size,
//! and a client that goes away stops the reading.

use super::AppState;
use super::auth::AsViewer;
use super::error::AppError;
use super::extract::{ApiPath, blocking};
use crate::engine::{Engine, IndexedObject, LogLine};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// What a file holds and how.
#[derive(Clone, Copy)]
enum Export {
    Logs(Format),
    Objects(Format),
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Csv,
    JsonLines,
}

impl Export {
    fn parse(file: &str) -> Option<Export> {
        Some(match file {
            "logs.csv" => Export::Logs(Format::Csv),
            "logs.jsonl" => Export::Logs(Format::JsonLines),
            "objects.csv" => Export::Objects(Format::Csv),
            "objects.jsonl" => Export::Objects(Format::JsonLines),
            _ => return None,
        })
    }

    fn format(self) -> Format {
        match self {
            Export::Logs(f) | Export::Objects(f) => f,
        }
    }
}

/// Rows read from the store per page.
const PAGE: usize = 1000;

/// A CSV field, quoted when it must be (RFC 4180).
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn log_rows(lines: &[LogLine], format: Format, out: &mut String) {
    for l in lines {
        match format {
            Format::JsonLines => {
                out.push_str(&serde_json::to_string(l).expect("serialises"));
                out.push('\n');
            }
            Format::Csv => {
                let level = serde_json::to_value(l.level).expect("serialises");
                let source = serde_json::to_value(l.source).expect("serialises");
                out.push_str(&format!(
                    "{},{},{},{},{},{}\r\n",
                    l.seq,
                    l.at.to_rfc3339(),
                    level.as_str().unwrap_or_default(),
                    source.as_str().unwrap_or_default(),
                    csv(l.step.as_deref().unwrap_or("")),
                    csv(&l.message)
                ));
            }
        }
    }
}

fn object_rows(objects: &[IndexedObject], format: Format, out: &mut String) {
    for o in objects {
        match format {
            Format::JsonLines => {
                out.push_str(&serde_json::to_string(o).expect("serialises"));
                out.push('\n');
            }
            Format::Csv => {
                let status = serde_json::to_value(o.result.status).expect("serialises");
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{}\r\n",
                    o.index,
                    csv(&o.step),
                    csv(&o.result.name),
                    csv(&o.result.object_type),
                    status.as_str().unwrap_or_default(),
                    o.result.duration_micros,
                    csv(o.result.error.as_deref().unwrap_or("")),
                    o.at.to_rfc3339()
                ));
            }
        }
    }
}

/// Read the export page after page into `tx` until the end or until the client is gone.
fn produce(
    engine: &Engine,
    id: &str,
    export: Export,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut next = 0u64;
    let mut out = String::new();
    if export.format() == Format::Csv {
        out.push_str(match export {
            Export::Logs(_) => "seq,at,level,source,step,message\r\n",
            Export::Objects(_) => "index,step,name,type,status,duration_micros,error,at\r\n",
        });
    }
    loop {
        let read = match export {
            Export::Logs(f) => engine.logs(id, next, PAGE).map(|lines| {
                log_rows(&lines, f, &mut out);
                lines.last().map(|l| l.seq)
            }),
            Export::Objects(f) => engine.objects(id, next, PAGE).map(|objects| {
                object_rows(&objects, f, &mut out);
                objects.last().map(|o| o.index + 1)
            }),
        };
        let last = match read {
            Ok(last) => last,
            Err(e) => {
                // The response has started: all that is left is to end it early.
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        if !out.is_empty()
            && tx
                .blocking_send(Ok(Bytes::from(std::mem::take(&mut out))))
                .is_err()
        {
            return; // the client went away
        }
        match last {
            Some(n) => next = n,
            None => return,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/migrations/{id}/export/{file}", tag = "migrations", operation_id = "export_migration",
    params(("id" = String, Path), ("file" = String, Path, description = "logs.csv, logs.jsonl, objects.csv or objects.jsonl")),
    responses((status = 200, description = "The whole file, streamed: CSV with a header row, or one JSON object per line",
        content((String = "text/csv"), (String = "application/x-ndjson")))))]
pub async fn export(
    State(s): State<Arc<AppState>>,
    _: AsViewer,
    ApiPath((id, file)): ApiPath<(String, String)>,
) -> Result<Response, AppError> {
    let export = Export::parse(&file).ok_or_else(|| {
        AppError::not_found(format!(
            "no export '{}': logs.csv, logs.jsonl, objects.csv or objects.jsonl",
            crate::engine::truncated(&file, 40)
        ))
    })?;
    let engine = s.engine.clone();
    let lookup = id.clone();
    blocking(move || Ok(engine.snapshot(&lookup).map(drop)?)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let engine = s.engine.clone();
    let job = id.clone();
    tokio::task::spawn_blocking(move || produce(&engine, &job, export, &tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let content_type = match export.format() {
        Format::Csv => "text/csv; charset=utf-8",
        Format::JsonLines => "application/x-ndjson",
    };
    let disposition = format!(
        "attachment; filename=\"{}-{file}\"",
        &id[..id.len().min(36)]
    );
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
