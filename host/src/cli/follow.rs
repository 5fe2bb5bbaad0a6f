//! Following a job's event stream: a progress bar with ETA, live log lines, the outcome. The
//! stream resumes where it broke (Last-Event-ID), so a dropped connection loses nothing.

use super::client::{CliError, Client};
use super::output::say;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::ExitCode;
use std::time::Duration;

/// Follow job `id` until it is final; exit 0 when it ended in `success`, 1 otherwise.
pub fn follow(client: &Client, id: &str, success: &str) -> Result<ExitCode, CliError> {
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    // Without a terminal the bar is hidden and so is `println` through it: print plainly.
    let show = |line: String| {
        if bar.is_hidden() {
            say!("{line}")
        } else {
            bar.println(line)
        }
    };
    let mut last_id: Option<String> = None;
    loop {
        let mut req = client
            .request(reqwest::Method::GET, &format!("/migrations/{id}/events"))
            .timeout(Duration::from_secs(24 * 3600));
        if let Some(l) = &last_id {
            req = req.header("Last-Event-ID", l);
        }
        let resp = req
            .send()
            .map_err(|e| CliError(format!("following {id}: {e}")))?;
        if !resp.status().is_success() {
            return Err(CliError(format!("following {id}: {}", resp.status())));
        }
        let mut event = String::new();
        let mut data = String::new();
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { break };
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if let Some(v) = line.strip_prefix("id:") {
                last_id = Some(v.trim().to_string());
            } else if line.is_empty() && !data.is_empty() {
                let body: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                data.clear();
                match event.as_str() {
                    "progress" => {
                        bar.set_position(
                            (body["percentage"].as_f64().unwrap_or(0.0) * 10.0) as u64,
                        );
                        let eta = body["eta_seconds"]
                            .as_u64()
                            .map(|s| format!(" eta {s}s"))
                            .unwrap_or_default();
                        bar.set_message(format!(
                            "{} {}/{}{eta}",
                            body["step"].as_str().unwrap_or(""),
                            body["done"],
                            body["total"]
                        ));
                    }
                    "log" => show(format!(
                        "[{}] {}",
                        body["level"].as_str().unwrap_or(""),
                        body["message"].as_str().unwrap_or("")
                    )),
                    "state" => show(format!("state: {}", body["to"].as_str().unwrap_or(""))),
                    "step" => {
                        if let Some(summary) = body["summary"].as_str() {
                            show(format!(
                                "step {} {}: {summary}",
                                body["step"].as_str().unwrap_or(""),
                                body["status"].as_str().unwrap_or("")
                            ));
                        }
                    }
                    "final" => {
                        bar.finish_and_clear();
                        let status = body["status"].as_str().unwrap_or("?");
                        say!(
                            "outcome: {status} ({} objects completed, {} failed, {} ms)",
                            body["completed_objects"],
                            body["failed_objects"],
                            body["duration_ms"]
                        );
                        for e in body["errors"].as_array().cloned().unwrap_or_default() {
                            say!(
                                "error: {} {}: {}",
                                e["phase"].as_str().unwrap_or(""),
                                e["kind"].as_str().unwrap_or(""),
                                e["message"].as_str().unwrap_or("")
                            );
                            for r in e["recovery"].as_array().into_iter().flatten() {
                                say!(
                                    "  try {}: {}",
                                    r["action"].as_str().unwrap_or(""),
                                    r["description"].as_str().unwrap_or("")
                                );
                            }
                        }
                        return Ok(if status == success {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(1)
                        });
                    }
                    _ => {}
                }
            }
        }
        // The stream broke before the final event: reconnect where it stopped.
        std::thread::sleep(Duration::from_millis(500));
    }
}
