//! `plover serve`: open the data directory, load plugins, resume interrupted jobs, serve the API.

mod plugin_loading;
pub use plugin_loading::sync_uploaded_plugins;

use crate::api::audit::AuditLog;
use crate::api::audit_records::PgAudit;
use crate::api::error::AppError;
use crate::api::session_records::PgSessions;
use crate::api::sessions::SessionStore;
use crate::api::token_records::PgTokens;
use crate::api::uploaded_plugins::{PgPlugins, PluginDir, UploadedPlugins};
use crate::api::{self, AppState, auth::Role, auth::TokenStore};
use crate::cluster::{Cluster, ClusterConfig};
use crate::config::{Config, LogFormat};
use crate::connectors::JobStateSpace;
use crate::connectors::{HostConnections, SledBuckets};
use crate::engine::Engine;
use crate::engine::EngineError;
use crate::engine::job::JobSnapshot;
use crate::engine::ownership::Forwarded;
use crate::runtime::{PluginRegistry, Runtime, RuntimeConfig};
use crate::startup::{self, StartupStatus};
use crate::store::{GroupFlush, JobStore, PgJobStore, SledJobStore, StoreErrorKind};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PLOVER_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Everything the server runs on, opened from `config`, reporting what it waits for in
/// `status` ([`serve`] has bound the port and answers health and readiness meanwhile).
pub fn open(config: &Config, status: &StartupStatus) -> anyhow::Result<Arc<AppState>> {
    let db =
        crate::store::open_database_with_cache(&config.data_dir.join("db"), config.db_cache_bytes)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e}\nRestore the data directory {} from a backup.",
                    config.data_dir.display()
                )
            })?;
    let flush = Arc::new(
        GroupFlush::with_stamp(db.clone(), &config.data_dir.join("durable-flushes")).map_err(
            |e| anyhow::anyhow!("{e}\nThe data directory is {}.", config.data_dir.display()),
        )?,
    );
    let (store, job_state, shared) = match &config.store {
        Some(url) => open_postgres_store(config, url, status)?,
        None => open_sled_store(config, flush.clone())?,
    };
    let store_pool = shared.as_ref().map(|(pool, _)| pool.clone());

    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: Some(config.data_dir.join("cache")),
        fuel_metering: config.fuel_metering,
        default_limits: config.limits.clone(),
        trust: crate::runtime::signing::TrustPolicy::new(
            config.require_signed,
            &config.trusted_keys,
        )
        .map_err(anyhow::Error::msg)?,
        ..RuntimeConfig::default()
    })?);
    let registry = Arc::new(PluginRegistry::new());
    let uploaded: Box<dyn UploadedPlugins> = match &store_pool {
        Some(pool) => Box::new(PgPlugins::new(pool.clone())),
        None => Box::new(PluginDir::open(&config.data_dir.join("plugins"))?),
    };

    let connections = Arc::new(HostConnections::new(
        SledBuckets::new(db.clone()),
        job_state,
        config.connections.clone(),
        config.any_sled_bucket,
    ));
    connections
        .open_all()
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let engine = Engine::open(registry, store, connections, config.defaults.clone())?;
    if config.max_concurrent_dry_calls > 0 {
        engine.set_concurrent_dry_calls(config.max_concurrent_dry_calls);
    }
    engine.set_max_results_per_step(config.max_object_results_per_step);
    engine
        .workers()
        .set_lease(Duration::from_millis(config.worker_lease_ms));
    // A request for a plugin still compiling waits, but is answered before its own timeout.
    engine.set_plugin_wait(Duration::from_secs(config.request_timeout_secs).mul_f64(0.9));

    let secure = config.secure_cookies;
    let (tokens, audit, sessions) = match store_pool {
        Some(pool) => (
            TokenStore::new(PgTokens::new(pool.clone())),
            AuditLog::new(PgAudit::new(pool.clone(), config.audit_retention)),
            SessionStore::new(PgSessions::new(pool), secure),
        ),
        None => (
            TokenStore::open(flush.clone())?,
            AuditLog::open(flush.clone(), config.audit_retention)?,
            SessionStore::open(flush, secure)?,
        ),
    };
    if tokens.is_empty()? {
        let preset = std::env::var("PLOVER_BOOTSTRAP_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let shown = preset.is_none();
        match tokens.create("admin", Role::Admin, vec![], preset) {
            Ok(token) if shown => {
                // Shown once: only its hash is stored.
                eprintln!("plover: created the first admin token (shown only now): {token}");
            }
            Ok(_) => {}
            // Another node sharing the store made it first.
            Err(crate::api::auth::TokenError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }

    let webhooks = Arc::new(Webhooks {
        host: config.webhook.clone(),
        secret: config.webhook_secret.clone(),
        ca_cert: webhook_ca(config.webhook_ca_cert.as_deref())?,
    });
    let hooks = webhooks.clone();
    engine.on_final(Box::new(move |snap: &JobSnapshot| {
        hooks.send(snap, "final")
    }));
    let hooks = webhooks;
    engine.on_progress(Box::new(move |snap: &JobSnapshot| {
        hooks.send(snap, "progress")
    }));

    let state = Arc::new(AppState {
        engine,
        runtime,
        uploaded,
        tokens,
        audit,
        sessions,
        ready: Default::default(),
        cluster: shared.map(|(_, cluster)| cluster),
        started_at: chrono::Utc::now(),
        node_name: config.node_name(),
    });
    plugin_loading::load_in_background(&state, &config.plugin_dirs)?;
    Ok(state)
}

/// Join the cluster of nodes on the store: forwarded requests are carried out by this node's
/// engine, plugin changes elsewhere are loaded here.
fn join_cluster(state: &Arc<AppState>, cluster: &Arc<Cluster>) -> anyhow::Result<()> {
    let engine = state.engine.clone();
    let apply: crate::cluster::Apply = Box::new(move |job, request, actor| {
        match engine.act_here(job, request, actor) {
            Ok(_) => Forwarded::Done,
            // It moved on again: the sender asks its new owner.
            Err(EngineError::OwnedElsewhere { .. }) => Forwarded::NotTaken,
            Err(e) => Forwarded::Refused(AppError::refusal(e)),
        }
    });
    let weak = Arc::downgrade(state);
    state.engine.set_plugin_source(Box::new(move |sha256| {
        if let Some(state) = weak.upgrade()
            && let Err(e) = sync_uploaded_plugins(&state)
        {
            tracing::warn!(sha256, error = %e, "could not load a plugin a job needs");
        }
    }));
    let weak = Arc::downgrade(state);
    let on_plugins = Box::new(move || {
        if let Some(state) = weak.upgrade()
            && let Err(e) = sync_uploaded_plugins(&state)
        {
            tracing::warn!(error = %e, "could not load plugins another node changed");
        }
    });
    cluster
        .start(state.engine.clone(), apply, on_plugins)
        .map_err(|e| anyhow::anyhow!("joining the cluster: {e}"))
}

/// The jobs' store and state buckets in the embedded database, checked when configured so.
fn open_sled_store(config: &Config, flush: Arc<GroupFlush>) -> anyhow::Result<OpenedStore> {
    let store = SledJobStore::open(flush)?.with_job_state_quota(config.job_state_quota_bytes);
    if config.verify_on_start {
        let report = store.check_integrity().map_err(|e| {
            anyhow::anyhow!(
                "{e}\nThe data directory {} is damaged; restore it from a backup (or start with verify_on_start = false to serve what can be read)",
                config.data_dir.display()
            )
        })?;
        tracing::info!(
            records = report.records,
            quarantined = report.quarantined.len(),
            took_ms = report.took.as_millis() as u64,
            "database checked"
        );
    }
    let job_state = Arc::new(store.job_state());
    Ok((Arc::new(store), job_state, None))
}

/// The jobs' store, their state buckets, and with PostgreSQL its pool and this node's place
/// among the nodes sharing it.
type OpenedStore = (
    Arc<dyn JobStore>,
    Arc<dyn JobStateSpace>,
    Option<(crate::store::PgPool, Arc<Cluster>)>,
);

/// The jobs' store and state buckets in PostgreSQL, its schema migrated, as one of the nodes
/// sharing it. A database that does not answer is waited for (never replaced by the embedded
/// one): the node says why in its log and retries with backoff. A schema newer than this
/// binary stops it.
fn open_postgres_store(
    config: &Config,
    url: &str,
    status: &StartupStatus,
) -> anyhow::Result<OpenedStore> {
    let pool = crate::store::connect_postgres(url, config.store_pool_size)
        .map_err(|e| anyhow::anyhow!("store: {e}"))?;
    let mut wait = Duration::from_millis(500);
    loop {
        match crate::store::probe_postgres(url) {
            Ok(()) => break,
            Err(e) if e.kind == StoreErrorKind::Unavailable => {
                status.set(format!("waiting for the store database: {e}"));
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "the store database does not answer; waiting for it");
                eprintln!("plover: waiting for the store database: {e}");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => anyhow::bail!("store: {e}"),
        }
    }
    // Nodes starting together take turns (an advisory lock); a newer schema stops this one.
    crate::store::pg_schema::migrate(&pool).map_err(|e| anyhow::anyhow!("store: {e}"))?;
    let cluster = Cluster::new(
        pool.clone(),
        url,
        ClusterConfig {
            node_name: config.node_name(),
            lease: Duration::from_millis(config.lease_ms.max(300)),
            api_url: config.advertise_url.clone(),
        },
    );
    let store = PgJobStore::new(pool.clone())
        .with_job_state_quota(config.job_state_quota_bytes)
        .for_node(cluster.node_id());
    let job_state = Arc::new(store.job_state());
    tracing::info!(
        schema = crate::store::pg_schema::latest_version(),
        node = cluster.node_id(),
        "jobs and tokens are kept in PostgreSQL"
    );
    Ok((Arc::new(store), job_state, Some((pool, cluster))))
}

/// Where job snapshots are sent: the host's webhook and each job's own, signed with the
/// host's secret when one is configured.
struct Webhooks {
    host: Option<String>,
    secret: Option<String>,
    /// A CA trusted besides the system's roots.
    ca_cert: Option<reqwest::Certificate>,
}

/// The `webhook_ca_cert`, read (and checked) at start.
fn webhook_ca(path: Option<&std::path::Path>) -> anyhow::Result<Option<reqwest::Certificate>> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("webhook_ca_cert {}: {e}", path.display()))?;
    let cert = reqwest::Certificate::from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("webhook_ca_cert {}: {e}", path.display()))?;
    Ok(Some(cert))
}

/// The header that carries a payload's signature: `sha256=` and the hex HMAC-SHA256 of the
/// body with the host's `webhook_secret`.
pub const SIGNATURE_HEADER: &str = "X-Plover-Signature";

/// `sha256=<hex>` of `body` with `secret` (what a receiver recomputes to check a payload).
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhooks {
    /// Send `snap` as event `event` (`final` or `progress`) to every URL that wants it, each
    /// on a thread of its own. Progress goes only to the job's own webhook.
    fn send(&self, snap: &JobSnapshot, event: &'static str) {
        let urls: Vec<String> = self
            .host
            .iter()
            .filter(|_| event == "final")
            .cloned()
            .chain(snap.options.webhook.iter().cloned())
            .collect();
        if urls.is_empty() {
            return;
        }
        let body = serde_json::to_vec(snap).unwrap_or_default();
        let signature = self.secret.as_deref().map(|s| webhook_signature(s, &body));
        for url in urls {
            let (body, job, signature) = (body.clone(), snap.id.clone(), signature.clone());
            let ca_cert = self.ca_cert.clone();
            std::thread::spawn(move || {
                let mut builder =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10));
                if let Some(cert) = ca_cert {
                    builder = builder.add_root_certificate(cert);
                }
                match builder.build() {
                    Ok(client) => notify(&client, &url, &job, event, body, signature.as_deref()),
                    Err(e) => tracing::error!(error = %e, "webhook client"),
                }
            });
        }
    }
}

/// POST a snapshot to `url`, retrying with backoff (0.5 s doubling, 6 attempts; a progress
/// notice is tried once: the next one supersedes it).
fn notify(
    client: &reqwest::blocking::Client,
    url: &str,
    job: &str,
    event: &str,
    body: Vec<u8>,
    signature: Option<&str>,
) {
    let attempts = if event == "final" { 6 } else { 1 };
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=attempts {
        let mut request = client
            .post(url)
            .header("content-type", "application/json")
            .header("X-Plover-Event", event)
            .body(body.clone());
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        match request.send() {
            Ok(r) if r.status().is_success() => {
                return tracing::info!(job, url, event, attempt, "webhook delivered");
            }
            Ok(r) => {
                tracing::warn!(job, url, event, attempt, status = %r.status(), "webhook refused")
            }
            Err(e) => tracing::warn!(job, url, event, attempt, error = %e, "webhook failed"),
        }
        if attempt < attempts {
            std::thread::sleep(wait);
            wait *= 2;
        }
    }
    tracing::error!(job, url, event, "webhook gave up after {attempts} attempts");
}

/// Run the server until SIGINT or SIGTERM. Running jobs are left `executing` in the store and
/// resume from their last checkpoints at the next start.
pub fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.bind))?;
        let addr = listener.local_addr()?;
        // Bound first: health and readiness answer while the store is opened or awaited.
        let status = StartupStatus::default();
        let api_slot: Arc<OnceLock<axum::Router>> = Arc::default();
        let mut serving = tokio::spawn(accept_loop(
            listener,
            startup::front_router(api_slot.clone(), status.clone()),
            Duration::from_secs(config.header_read_timeout_secs.max(1)),
            shutdown_signal(),
        ));
        println!("plover starting on http://{addr}");
        let opening = {
            let (config, status) = (config.clone(), status.clone());
            tokio::task::spawn_blocking(move || open(&config, &status))
        };
        let state = tokio::select! {
            opened = opening => opened??,
            // Stopped while starting: nothing ran yet, nothing to flush.
            _ = &mut serving => return anyhow::Ok(()),
        };
        if let Some(cluster) = state.cluster.clone() {
            let state = state.clone();
            tokio::task::spawn_blocking(move || join_cluster(&state, &cluster)).await??;
        }
        status.set("resuming interrupted jobs");
        let engine = state.engine.clone();
        let resumed = tokio::task::spawn_blocking(move || engine.recover()).await??;
        if !resumed.is_empty() {
            tracing::info!(jobs = ?resumed, "resumed interrupted jobs");
        }
        let _ = api_slot.set(api::router(
            state.clone(),
            config.max_body_bytes,
            Duration::from_secs(config.request_timeout_secs),
        ));
        state.ready.store(true, Ordering::SeqCst);
        println!("plover listening on http://{addr}");
        tracing::info!(%addr, "listening");
        let _ = serving.await;
        tracing::info!(
            "shutting down; running jobs resume from their checkpoints at the next start"
        );
        if let Some(cluster) = state.cluster.clone() {
            // Hand running jobs over to the other nodes at once, rather than after a lease.
            tokio::task::spawn_blocking(move || cluster.stop(Duration::from_secs(5))).await?;
        }
        let engine = state.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush()).await??;
        anyhow::Ok(())
    })?;
    // Plugin calls still running belong to threads that end with the process.
    std::process::exit(0);
}

/// Serve HTTP/1 and HTTP/2 connections until `shutdown` resolves. A client that does not send
/// its request headers within `header_timeout` is disconnected, so slow clients cannot hold
/// sockets indefinitely.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, for example: wait instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    // Event streams stay open as long as their jobs run: give requests a moment, then go.
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
