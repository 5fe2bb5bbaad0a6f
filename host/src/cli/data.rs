//! `plover bucket` (import JSON Lines into a bucket of the server's embedded database, list
//! its keys and values) and `plover demo` (seed sample sessions and plan a kv-copy of them).

use super::client::{CliError, Client};
use super::output::say;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum BucketCommand {
    /// Import a JSON Lines file (`{"key": "...", "value": ...}` per line; `-` reads stdin).
    Import { bucket: String, file: PathBuf },
    /// List a bucket's keys and values, in key order.
    List {
        bucket: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

pub fn bucket(client: &Client, command: BucketCommand) -> Result<ExitCode, CliError> {
    match command {
        BucketCommand::Import { bucket, file } => {
            let body = if file.as_os_str() == "-" {
                let mut all = vec![];
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut all)
                    .map_err(|e| CliError(format!("reading stdin: {e}")))?;
                all
            } else {
                std::fs::read(&file).map_err(|e| CliError(format!("{}: {e}", file.display())))?
            };
            let path = format!("/buckets/{}/import", urlencoded(&bucket));
            let done = client.send(
                client
                    .request(reqwest::Method::POST, &path)
                    .header("content-type", "application/x-ndjson")
                    .body(body),
            )?;
            say!("imported {} keys into {bucket}", done["written"]);
        }
        BucketCommand::List {
            bucket,
            prefix,
            limit,
        } => {
            let mut after: Option<String> = None;
            let mut shown = 0;
            while shown < limit {
                let mut q = vec![
                    ("prefix", prefix.clone()),
                    ("limit", (limit - shown).min(1000).to_string()),
                ];
                if let Some(a) = &after {
                    q.push(("after", a.clone()));
                }
                let path = format!("/buckets/{}/entries", urlencoded(&bucket));
                let page = client.send(client.request(reqwest::Method::GET, &path).query(&q))?;
                let items = page["items"].as_array().cloned().unwrap_or_default();
                for e in &items {
                    let value = e["value"].as_str().map(str::to_string).unwrap_or_else(|| {
                        format!("base64:{}", e["value_base64"].as_str().unwrap_or(""))
                    });
                    say!("{}\t{value}", e["key"].as_str().unwrap_or(""));
                }
                shown += items.len();
                match page["next_after"].as_str() {
                    Some(next) if !items.is_empty() => after = Some(next.to_string()),
                    _ => break,
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Seed the demo's sample data, plan its kv-copy, and (with `run`) run and follow it.
pub fn demo(client: &Client, run: bool) -> Result<ExitCode, CliError> {
    let job = client.post("/demo")?;
    let id = job["id"].as_str().unwrap_or("?").to_string();
    say!(
        "seeded {} sample sessions into demo-sessions and planned migration {id}:",
        crate::api::demo::SESSIONS
    );
    say!("  kv-copy of session/* from demo-sessions into demo-sessions-copy, adding a field");
    if !run {
        say!("next: plover run {id} --follow    (or open the console and press Run)");
        say!("then: plover bucket list demo-sessions-copy --limit 3");
        return Ok(ExitCode::SUCCESS);
    }
    client.post(&format!("/migrations/{id}/execute"))?;
    super::follow::follow(client, &id, "completed")
}

fn urlencoded(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
