//! The `plover` command line: `serve` runs the server; every other command is a client of a
//! running server's HTTP API (address and token from flags or `PLOVER_SERVER`/`PLOVER_TOKEN`).
//!
//! Exit status: 0 on success (for `run --follow`, when the job completed), 1 when the job
//! ended otherwise, 2 when a request failed.

use crate::config::Config;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "plover",
    version,
    about = "Run migrations as sandboxed WebAssembly plugins"
)]
pub struct Cli {
    /// The server to talk to.
    #[arg(
        long,
        global = true,
        env = "PLOVER_SERVER",
        default_value = "http://127.0.0.1:7373"
    )]
    server: String,
    /// API token.
    #[arg(long, global = true, env = "PLOVER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// A TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address (overrides the file and PLOVER_BIND).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
        /// Data directory (overrides the file and PLOVER_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A directory of plugins to load at start-up; repeatable.
        #[arg(long = "plugins-dir")]
        plugin_dirs: Vec<PathBuf>,
    },
    /// Manage plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Create a migration and show its plan.
    Plan(PlanArgs),
    /// Dry-run a migration's plan.
    Validate {
        id: String,
        /// Wait for the dry run's verdict.
        #[arg(long)]
        wait: bool,
    },
    /// Execute a migration.
    Run {
        id: String,
        /// Show live progress and logs until the job ends; the exit status tells the outcome.
        #[arg(long)]
        follow: bool,
    },
    /// Show a migration.
    Status { id: String },
    /// Show a migration's log lines.
    Logs {
        id: String,
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Approve a migration's plan.
    Approve { id: String },
    /// Cancel a migration.
    Cancel { id: String },
    /// Pause a running migration.
    Pause { id: String },
    /// Resume a paused migration.
    Resume { id: String },
    /// Retry a failed migration's failed steps.
    Retry { id: String },
    /// Roll back a migration.
    Rollback { id: String },
    /// List migrations.
    Ls {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        handler: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Upload a component (.wasm).
    Add { file: PathBuf },
    /// List loaded plugins.
    List,
    /// Show one plugin: NAME@VERSION.
    Show { plugin: String },
    /// Remove one plugin: NAME@VERSION.
    Rm { plugin: String },
}

#[derive(clap::Args)]
struct PlanArgs {
    /// Handler requirement, e.g. kv-copy@^1.
    #[arg(long)]
    handler: String,
    #[arg(long)]
    kind: Option<String>,
    /// Handler parameters as one JSON object.
    #[arg(long, default_value = "{}")]
    params: String,
    /// Grant a connection to a binding: BINDING=CONNECTION; repeatable.
    #[arg(long = "grant")]
    grants: Vec<String>,
    /// Job option overrides as a JSON object, e.g. '{"batch_size":1000}'.
    #[arg(long, default_value = "{}")]
    options: String,
}

/// A failed request or bad input: exit status 2 with the message.
struct CliError(String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            bind,
            data_dir,
            plugin_dirs,
        } => {
            let result = Config::load(config.as_deref()).and_then(|mut c| {
                if let Some(b) = bind {
                    c.bind = b;
                }
                if let Some(d) = data_dir {
                    c.data_dir = d;
                }
                if !plugin_dirs.is_empty() {
                    c.plugin_dirs = plugin_dirs;
                }
                crate::server::serve(c)
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("plover: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        command => {
            let client = Client {
                base: cli.server.trim_end_matches('/').to_string(),
                token: cli.token,
                http: reqwest::blocking::Client::new(),
            };
            match client.run(command) {
                Ok(code) => code,
                Err(CliError(m)) => {
                    eprintln!("plover: {m}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

impl Client {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Send, and turn an API error into its message.
    fn send(&self, r: reqwest::blocking::RequestBuilder) -> Result<Value, CliError> {
        let resp = r
            .send()
            .map_err(|e| CliError(format!("cannot reach {}: {e}", self.base)))?;
        let status = resp.status();
        let text = resp.text()?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(body)
        } else {
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("request failed");
            Err(CliError(format!("{status}: {message}")))
        }
    }

    fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::GET, path))
    }

    fn post(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(reqwest::Method::POST, path))
    }

    fn run(&self, command: Command) -> Result<ExitCode, CliError> {
        match command {
            Command::Serve { .. } => unreachable!("handled in main"),
            Command::Plugin(PluginCommand::Add { file }) => {
                let bytes = std::fs::read(&file)
                    .map_err(|e| CliError(format!("{}: {e}", file.display())))?;
                let p = self.send(
                    self.request(reqwest::Method::POST, "/plugins")
                        .header("content-type", "application/wasm")
                        .body(bytes),
                )?;
                println!(
                    "loaded {}@{} sha256:{}",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?"),
                    p["sha256"].as_str().unwrap_or("?")
                );
            }
            Command::Plugin(PluginCommand::List) => {
                for p in self
                    .get("/plugins")?
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    println!(
                        "{}@{}  {}  sha256:{}",
                        p["name"].as_str().unwrap_or(""),
                        p["version"].as_str().unwrap_or(""),
                        p["kinds"],
                        &p["sha256"].as_str().unwrap_or("")
                            [..12.min(p["sha256"].as_str().unwrap_or("").len())]
                    );
                }
            }
            Command::Plugin(PluginCommand::Show { plugin }) => {
                print_json(&self.get(&plugin_path(&plugin)?)?)
            }
            Command::Plugin(PluginCommand::Rm { plugin }) => {
                self.send(self.request(reqwest::Method::DELETE, &plugin_path(&plugin)?))?;
                println!("removed {plugin}");
            }
            Command::Plan(args) => {
                let params: Value = serde_json::from_str(&args.params)
                    .map_err(|e| CliError(format!("--params: {e}")))?;
                let options: Value = serde_json::from_str(&args.options)
                    .map_err(|e| CliError(format!("--options: {e}")))?;
                let mut grants = serde_json::Map::new();
                for g in &args.grants {
                    let (b, c) = g.split_once('=').ok_or_else(|| {
                        CliError(format!("--grant '{g}': expected BINDING=CONNECTION"))
                    })?;
                    grants.insert(b.into(), Value::String(c.into()));
                }
                let body = json!({ "handler": args.handler, "kind": args.kind, "parameters": params, "grants": grants, "options": options });
                let job = self.send(
                    self.request(reqwest::Method::POST, "/migrations")
                        .json(&body),
                )?;
                println!(
                    "migration {}  ({}@{}, {})",
                    job["id"].as_str().unwrap_or("?"),
                    job["plugin"]["name"].as_str().unwrap_or("?"),
                    job["plugin"]["version"].as_str().unwrap_or("?"),
                    job["status"].as_str().unwrap_or("?")
                );
                for s in job["plan"]["steps"].as_array().cloned().unwrap_or_default() {
                    let deps = s["depends_on"]
                        .as_array()
                        .map(|d| {
                            d.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    println!(
                        "  {:<12} {:<13} {}{}",
                        s["id"].as_str().unwrap_or(""),
                        s["kind"].as_str().unwrap_or(""),
                        s["description"].as_str().unwrap_or(""),
                        if deps.is_empty() {
                            String::new()
                        } else {
                            format!("  (after {deps})")
                        }
                    );
                }
                println!("risk: {}", job["plan"]["risk"].as_str().unwrap_or("?"));
            }
            Command::Validate { id, wait } => {
                self.post(&format!("/migrations/{id}/validate"))?;
                if !wait {
                    println!("dry run of {id} started");
                    return Ok(ExitCode::SUCCESS);
                }
                loop {
                    let job = self.get(&format!("/migrations/{id}"))?;
                    if job["status"] != "validating" && !job["dry_run"].is_null() {
                        let passed = job["dry_run"]["passed"].as_bool().unwrap_or(false);
                        for f in job["dry_run"]["report"]["findings"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                        {
                            println!(
                                "{:<8} {:<24} {}",
                                f["severity"].as_str().unwrap_or(""),
                                f["code"].as_str().unwrap_or(""),
                                f["message"].as_str().unwrap_or("")
                            );
                        }
                        println!("dry run {}", if passed { "passed" } else { "did not pass" });
                        return Ok(if passed {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(1)
                        });
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Command::Run { id, follow } => {
                let job = self.post(&format!("/migrations/{id}/execute"))?;
                println!("migration {id}: {}", job["status"].as_str().unwrap_or("?"));
                if follow {
                    return self.follow(&id);
                }
            }
            Command::Status { id } => print_json(&self.get(&format!("/migrations/{id}"))?),
            Command::Logs { id, after } => {
                let page = self.get(&format!("/migrations/{id}/logs?after={after}&limit=1000"))?;
                for l in page["items"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{} {:<7} {}",
                        l["at"].as_str().unwrap_or(""),
                        l["level"].as_str().unwrap_or(""),
                        l["message"].as_str().unwrap_or("")
                    );
                }
            }
            Command::Approve { id } => self.act(&id, "approve")?,
            Command::Cancel { id } => self.act(&id, "cancel")?,
            Command::Pause { id } => self.act(&id, "pause")?,
            Command::Resume { id } => self.act(&id, "resume")?,
            Command::Retry { id } => self.act(&id, "retry")?,
            Command::Rollback { id } => self.act(&id, "rollback")?,
            Command::Ls { status, handler } => {
                let mut q = vec![];
                if let Some(s) = status {
                    q.push(("status", s));
                }
                if let Some(h) = handler {
                    q.push(("handler", h));
                }
                let page =
                    self.send(self.request(reqwest::Method::GET, "/migrations").query(&q))?;
                for j in page["items"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{}  {:<17} {:>5.1}%  {}@{}",
                        j["id"].as_str().unwrap_or(""),
                        j["status"].as_str().unwrap_or(""),
                        j["percentage"].as_f64().unwrap_or(0.0),
                        j["plugin"]["name"].as_str().unwrap_or(""),
                        j["plugin"]["version"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    fn act(&self, id: &str, action: &str) -> Result<(), CliError> {
        let job = self.post(&format!("/migrations/{id}/{action}"))?;
        println!("migration {id}: {}", job["status"].as_str().unwrap_or("?"));
        Ok(())
    }

    /// Follow the job's event stream: a progress bar with ETA, live log lines, the outcome.
    fn follow(&self, id: &str) -> Result<ExitCode, CliError> {
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:40}] {percent:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        // Without a terminal the bar is hidden and so is `println` through it: print plainly.
        let say = |line: String| {
            if bar.is_hidden() {
                println!("{line}")
            } else {
                bar.println(line)
            }
        };
        let mut last_id: Option<String> = None;
        loop {
            let mut req = self
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
                        "log" => say(format!(
                            "[{}] {}",
                            body["level"].as_str().unwrap_or(""),
                            body["message"].as_str().unwrap_or("")
                        )),
                        "state" => say(format!("state: {}", body["to"].as_str().unwrap_or(""))),
                        "step" => {
                            if let Some(summary) = body["summary"].as_str() {
                                say(format!(
                                    "step {} {}: {summary}",
                                    body["step"].as_str().unwrap_or(""),
                                    body["status"].as_str().unwrap_or("")
                                ));
                            }
                        }
                        "final" => {
                            bar.finish_and_clear();
                            let status = body["status"].as_str().unwrap_or("?");
                            println!(
                                "outcome: {status} ({} objects completed, {} failed, {} ms)",
                                body["completed_objects"],
                                body["failed_objects"],
                                body["duration_ms"]
                            );
                            for e in body["errors"].as_array().cloned().unwrap_or_default() {
                                println!(
                                    "error: {} {}: {}",
                                    e["phase"].as_str().unwrap_or(""),
                                    e["kind"].as_str().unwrap_or(""),
                                    e["message"].as_str().unwrap_or("")
                                );
                            }
                            return Ok(if status == "completed" {
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
}

fn plugin_path(spec: &str) -> Result<String, CliError> {
    let (name, version) = spec
        .split_once('@')
        .ok_or_else(|| CliError(format!("'{spec}': expected NAME@VERSION")))?;
    Ok(format!("/plugins/{name}/{version}"))
}
