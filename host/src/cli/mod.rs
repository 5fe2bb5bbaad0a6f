//! The `plover` command line: `serve` runs the server; every other command is a client of a
//! running server's HTTP API (address and token from flags or `PLOVER_SERVER`/`PLOVER_TOKEN`).
//!
//! Exit status: 0 on success (for `run --follow` and `watch`, when the job completed; for
//! `rollback --wait`, when it rolled back), 1 when the job ended otherwise (`partial`
//! included: some objects failed), 2 when a request failed.
//!
//! Files: `client.rs` the HTTP client, `follow.rs` the live event stream, `status.rs` the
//! readable report, `data.rs` buckets and the demo, `worker.rs` an external worker running a
//! program per task, `output.rs` stdout that a closed pipe ends quietly.

mod client;
mod data;
mod follow;
pub(crate) mod output;
mod plugin_declare;
mod plugin_new;
mod plugin_sign;
mod plugin_test;
mod status;
mod worker;

use crate::config::Config;
use clap::{Parser, Subcommand};
use client::{CliError, Client, plugin_path};
use output::say;
use serde_json::{Value, json};
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
        /// A job that is running already is followed as it is.
        #[arg(long)]
        follow: bool,
    },
    /// Follow a migration's progress and logs until it ends (it may be running already).
    Watch { id: String },
    /// Show a migration: state, progress, objects, steps, errors.
    Status {
        id: String,
        /// Print the full snapshot as JSON instead.
        #[arg(long)]
        json: bool,
    },
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
    /// Run again only the failed objects of a migration that ended `partial`.
    RetryObjects {
        id: String,
        /// Only this step's (default: every step that ended partial).
        #[arg(long)]
        step: Option<String>,
        /// Follow the run until it ends; the exit status tells the outcome.
        #[arg(long)]
        wait: bool,
    },
    /// Roll back a migration.
    Rollback {
        id: String,
        /// Follow the rollback until it ends; the exit status tells the outcome.
        #[arg(long)]
        wait: bool,
    },
    /// Delete a migration that is not running.
    Delete {
        id: String,
        /// Delete even if its changes could still be rolled back (the journal is lost).
        #[arg(long)]
        force: bool,
    },
    /// Import into and list the buckets of the server's embedded database.
    #[command(subcommand)]
    Bucket(data::BucketCommand),
    /// Seed sample sessions and plan a kv-copy of them: a first migration with real data.
    Demo {
        /// Run it at once and follow it.
        #[arg(long)]
        run: bool,
    },
    /// Run COMMAND for every task of a worker queue: `plover worker --queue NAME -- COMMAND…`
    /// (the task as JSON on stdin; its output lines, JSON or plain, become the task's logs,
    /// results, checkpoints and end).
    Worker(worker::WorkerArgs),
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
    /// Upload a component (.wasm), with its signature (FILE.sig) when there is one.
    Add { file: PathBuf },
    /// List loaded plugins.
    List,
    /// Show one plugin: NAME@VERSION.
    Show { plugin: String },
    /// Remove one plugin: NAME@VERSION.
    Rm { plugin: String },
    /// Check a handler's whole lifecycle here, without a server: plan, dry run, every
    /// step, rollback, and (with --crash-at) a crash and resume. Exit status 0 when it
    /// passed, 1 when a check failed, 2 when it could not run.
    Test(plugin_test::PluginTestArgs),
    /// Create a handler project that builds and passes `plover plugin test`.
    New(plugin_new::PluginNewArgs),
    /// Make a signing key: a PKCS#8 PEM private key file, and its public key printed for the
    /// operators' trusted_keys.
    Keygen {
        /// Where to write the private key (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Declare the bindings a built component expects (written into it): the server shows
    /// them, refuses jobs granting others, and keeps those declared read-only so. Declare
    /// before signing.
    Declare {
        file: PathBuf,
        /// NAME=KIND:ACCESS[:DESCRIPTION], KIND kv, sql or http, ACCESS read or read-write;
        /// repeatable (none: declares that it needs no bindings).
        #[arg(long = "binding")]
        bindings: Vec<String>,
        /// A JSON file listing bindings as the section holds them (`[{"name": "source",
        /// "kind": "kv", "access": "read"}, …]`), e.g. a `bindings.json` kept beside the
        /// plugin's source; `--binding`s are added after its entries.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Where to write the declared component (default: in place).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a component with a private key (from keygen or `openssl genpkey -algorithm
    /// ed25519`), writing FILE.sig beside it.
    Sign {
        file: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// Where to write the signature (default FILE.sig).
        #[arg(long)]
        out: Option<PathBuf>,
    },
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

/// A plugin's declared bindings in one line: `source (kv, read), target (kv, read-write)`.
fn declared_bindings(bindings: &serde_json::Value) -> String {
    match bindings.as_array() {
        None => "not declared".into(),
        Some(list) if list.is_empty() => "none".into(),
        Some(list) => list
            .iter()
            .map(|b| {
                format!(
                    "{} ({}, {})",
                    b["name"].as_str().unwrap_or("?"),
                    b["kind"].as_str().unwrap_or("?"),
                    b["access"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
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
        Command::Plugin(PluginCommand::Test(args)) => plugin_test::plugin_test(args),
        Command::Plugin(PluginCommand::Keygen { out }) => plugin_sign::keygen(&out),
        Command::Plugin(PluginCommand::New(args)) => plugin_new::plugin_new(args),
        Command::Plugin(PluginCommand::Declare {
            file,
            bindings,
            from,
            out,
        }) => plugin_declare::declare(&file, from.as_deref(), &bindings, out),
        Command::Plugin(PluginCommand::Sign { file, key, out }) => {
            plugin_sign::sign(&file, &key, out)
        }
        command => {
            let client = Client {
                base: cli.server.trim_end_matches('/').to_string(),
                token: cli.token,
                http: reqwest::blocking::Client::new(),
            };
            match run(&client, command) {
                Ok(code) => code,
                Err(CliError(m)) => {
                    eprintln!("plover: {m}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn print_json(v: &Value) {
    say!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn act(client: &Client, id: &str, action: &str) -> Result<(), CliError> {
    let job = client.post(&format!("/migrations/{id}/{action}"))?;
    say!("migration {id}: {}", job["status"].as_str().unwrap_or("?"));
    Ok(())
}

fn run(client: &Client, command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Serve { .. }
        | Command::Plugin(
            PluginCommand::Test(_)
            | PluginCommand::New(_)
            | PluginCommand::Keygen { .. }
            | PluginCommand::Declare { .. }
            | PluginCommand::Sign { .. },
        ) => {
            unreachable!("handled in main")
        }
        Command::Plugin(PluginCommand::Add { file }) => {
            let bytes =
                std::fs::read(&file).map_err(|e| CliError(format!("{}: {e}", file.display())))?;
            let mut request = client
                .request(reqwest::Method::POST, "/plugins")
                .header("content-type", "application/wasm");
            let sig_path = plugin_sign::signature_path(&file, None);
            match std::fs::read(&sig_path) {
                Ok(sig) => {
                    use base64::Engine as _;
                    request = request.header(
                        crate::api::plugins::SIGNATURE_HEADER,
                        base64::engine::general_purpose::STANDARD.encode(sig),
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CliError(format!("{}: {e}", sig_path.display()))),
            }
            let p = client.send(request.body(bytes))?;
            say!(
                "loaded {}@{} sha256:{}{}",
                p["name"].as_str().unwrap_or("?"),
                p["version"].as_str().unwrap_or("?"),
                p["sha256"].as_str().unwrap_or("?"),
                p["signed_by"]
                    .as_str()
                    .map(|s| format!(", signed by {s}"))
                    .unwrap_or_default()
            );
        }
        Command::Plugin(PluginCommand::List) => {
            for p in client
                .get("/plugins")?
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let sha = p["sha256"].as_str().unwrap_or("");
                say!(
                    "{}@{}  {}  sha256:{}  bindings: {}",
                    p["name"].as_str().unwrap_or(""),
                    p["version"].as_str().unwrap_or(""),
                    p["kinds"],
                    &sha[..12.min(sha.len())],
                    declared_bindings(&p["bindings"])
                );
            }
        }
        Command::Plugin(PluginCommand::Show { plugin }) => {
            print_json(&client.get(&plugin_path(&plugin)?)?)
        }
        Command::Plugin(PluginCommand::Rm { plugin }) => {
            client.send(client.request(reqwest::Method::DELETE, &plugin_path(&plugin)?))?;
            say!("removed {plugin}");
        }
        Command::Plan(args) => plan(client, args)?,
        Command::Bucket(command) => return data::bucket(client, command),
        Command::Demo { run } => return data::demo(client, run),
        Command::Worker(args) => return worker::run(client, args),
        Command::Validate { id, wait } => {
            client.post(&format!("/migrations/{id}/validate"))?;
            if !wait {
                say!("dry run of {id} started");
                return Ok(ExitCode::SUCCESS);
            }
            loop {
                let job = client.get(&format!("/migrations/{id}"))?;
                if job["status"] != "validating" && !job["dry_run"].is_null() {
                    let passed = job["dry_run"]["passed"].as_bool().unwrap_or(false);
                    for f in job["dry_run"]["report"]["findings"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                    {
                        say!(
                            "{:<8} {:<24} {}",
                            f["severity"].as_str().unwrap_or(""),
                            f["code"].as_str().unwrap_or(""),
                            f["message"].as_str().unwrap_or("")
                        );
                    }
                    say!("dry run {}", if passed { "passed" } else { "did not pass" });
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
            let answer = client.try_send(
                client.request(reqwest::Method::POST, &format!("/migrations/{id}/execute")),
            )?;
            match answer {
                Ok(job) => say!("migration {id}: {}", job["status"].as_str().unwrap_or("?")),
                // Running already (after a restart, from another client): follow it as it is.
                Err(e) if follow && e.body["details"]["status"] == "executing" => {
                    say!("migration {id} is running already; following it")
                }
                Err(e) => return Err(CliError(e.message())),
            }
            if follow {
                return follow::follow(client, &id, "completed");
            }
        }
        Command::Watch { id } => return follow::follow(client, &id, "completed"),
        Command::Status { id, json } => {
            let job = client.get(&format!("/migrations/{id}"))?;
            if json {
                print_json(&job)
            } else {
                status::print(&job)
            }
        }
        Command::Logs { id, after } => {
            let page = client.get(&format!("/migrations/{id}/logs?after={after}&limit=1000"))?;
            for l in page["items"].as_array().cloned().unwrap_or_default() {
                say!(
                    "{} {:<7} {}",
                    l["at"].as_str().unwrap_or(""),
                    l["level"].as_str().unwrap_or(""),
                    l["message"].as_str().unwrap_or("")
                );
            }
        }
        Command::Approve { id } => act(client, &id, "approve")?,
        Command::Cancel { id } => act(client, &id, "cancel")?,
        Command::Pause { id } => act(client, &id, "pause")?,
        Command::Resume { id } => act(client, &id, "resume")?,
        Command::Retry { id } => act(client, &id, "retry")?,
        Command::RetryObjects { id, step, wait } => {
            let path = format!("/migrations/{id}/retry-objects");
            let body = serde_json::json!({ "step": step });
            let job = client.send(client.request(reqwest::Method::POST, &path).json(&body))?;
            say!("migration {id}: {}", job["status"].as_str().unwrap_or("?"));
            if wait {
                return follow::follow(client, &id, "completed");
            }
        }
        Command::Rollback { id, wait } => {
            act(client, &id, "rollback")?;
            if wait {
                return follow::follow(client, &id, "rolled-back");
            }
        }
        Command::Delete { id, force } => {
            let path = format!("/migrations/{id}{}", if force { "?force=true" } else { "" });
            client.send(client.request(reqwest::Method::DELETE, &path))?;
            say!("deleted {id}");
        }
        Command::Ls { status, handler } => {
            let mut q = vec![];
            if let Some(s) = status {
                q.push(("status", s));
            }
            if let Some(h) = handler {
                q.push(("handler", h));
            }
            let page = client.send(
                client
                    .request(reqwest::Method::GET, "/migrations")
                    .query(&q),
            )?;
            for j in page["items"].as_array().cloned().unwrap_or_default() {
                say!(
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

fn plan(client: &Client, args: PlanArgs) -> Result<(), CliError> {
    let params: Value =
        serde_json::from_str(&args.params).map_err(|e| CliError(format!("--params: {e}")))?;
    let options: Value =
        serde_json::from_str(&args.options).map_err(|e| CliError(format!("--options: {e}")))?;
    let mut grants = serde_json::Map::new();
    for g in &args.grants {
        let (b, c) = g
            .split_once('=')
            .ok_or_else(|| CliError(format!("--grant '{g}': expected BINDING=CONNECTION")))?;
        grants.insert(b.into(), Value::String(c.into()));
    }
    let body = json!({ "handler": args.handler, "kind": args.kind, "parameters": params, "grants": grants, "options": options });
    let job = client.send(
        client
            .request(reqwest::Method::POST, "/migrations")
            .json(&body),
    )?;
    say!(
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
        say!(
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
    say!("risk: {}", job["plan"]["risk"].as_str().unwrap_or("?"));
    Ok(())
}
