//! `plover serve`: open the data directory, load plugins, resume interrupted jobs, serve the API.

use crate::api::{self, AppState, auth::Role, auth::TokenStore};
use crate::config::{Config, LogFormat};
use crate::connectors::{HostConnections, SledBuckets};
use crate::engine::Engine;
use crate::engine::job::JobSnapshot;
use crate::runtime::{PluginRegistry, Runtime, RuntimeConfig};
use crate::store::SledJobStore;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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

/// Everything the server runs on, opened from `config`. Split from [`serve`] so start-up
/// problems surface before the port is bound.
pub fn open(config: &Config) -> anyhow::Result<Arc<AppState>> {
    let plugin_store = config.data_dir.join("plugins");
    std::fs::create_dir_all(&plugin_store)?;
    let db = sled::Config::new()
        .path(config.data_dir.join("db"))
        .open()
        .map_err(|e| {
            anyhow::anyhow!("opening the database in {}: {e}", config.data_dir.display())
        })?;

    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: Some(config.data_dir.join("cache")),
        fuel_metering: config.fuel_metering,
        default_limits: config.limits.clone(),
        ..RuntimeConfig::default()
    })?);
    let registry = Arc::new(PluginRegistry::new());
    let mut dirs = config.plugin_dirs.clone();
    dirs.push(plugin_store.clone());
    for dir in &dirs {
        if !dir.exists() {
            tracing::warn!(dir = %dir.display(), "plugin directory does not exist; skipped");
            continue;
        }
        for (path, result) in runtime.load_dir(dir)? {
            match result
                .map_err(anyhow::Error::from)
                .and_then(|p| Ok(registry.insert(p)?))
            {
                Ok(p) => {
                    tracing::info!(plugin = %p.label(), sha256 = p.sha256(), path = %path.display(), "plugin loaded")
                }
                Err(e) => tracing::error!(path = %path.display(), error = %e, "plugin not loaded"),
            }
        }
    }

    let store = Arc::new(SledJobStore::open(&db)?);
    let connections = Arc::new(HostConnections::new(
        SledBuckets::new(db.clone()),
        config.connections.clone(),
        config.any_sled_bucket,
    ));
    connections
        .open_all()
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let engine = Engine::open(registry, store, connections, config.defaults.clone())?;

    let tokens = TokenStore::open(&db)?;
    if tokens.is_empty() {
        let preset = std::env::var("PLOVER_BOOTSTRAP_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let shown = preset.is_none();
        let token = tokens.create("admin", Role::Admin, preset)?;
        if shown {
            // Shown once: only its hash is stored.
            eprintln!("plover: created the first admin token (shown only now): {token}");
        }
    }

    let hosts_hook = config.webhook.clone();
    engine.on_final(Box::new(move |snap: &JobSnapshot| {
        let urls: Vec<String> = hosts_hook
            .iter()
            .cloned()
            .chain(snap.options.webhook.iter().cloned())
            .collect();
        for url in urls {
            let body = serde_json::to_vec(snap).unwrap_or_default();
            let job = snap.id.clone();
            std::thread::spawn(move || notify(&url, &job, body));
        }
    }));

    Ok(Arc::new(AppState {
        engine,
        runtime,
        plugin_store,
        tokens,
        audit: crate::api::audit::AuditLog::open(&db)?,
        ready: Default::default(),
        metrics: Default::default(),
    }))
}

/// POST the final snapshot to `url`, retrying with backoff (0.5 s doubling, 6 attempts).
fn notify(url: &str, job: &str, body: Vec<u8>) {
    let client = match reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => return tracing::error!(error = %e, "webhook client"),
    };
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=6 {
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send();
        match sent {
            Ok(r) if r.status().is_success() => {
                return tracing::info!(job, url, attempt, "webhook delivered");
            }
            Ok(r) => tracing::warn!(job, url, attempt, status = %r.status(), "webhook refused"),
            Err(e) => tracing::warn!(job, url, attempt, error = %e, "webhook failed"),
        }
        std::thread::sleep(wait);
        wait *= 2;
    }
    tracing::error!(job, url, "webhook gave up after 6 attempts");
}

/// Run the server until SIGINT or SIGTERM. Running jobs are left `executing` in the store and
/// resume from their last checkpoints at the next start.
pub fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(config.log_format);
    let state = open(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.bind))?;
        let addr = listener.local_addr()?;
        let resumed = state.engine.recover();
        if !resumed.is_empty() {
            tracing::info!(jobs = ?resumed, "resumed interrupted jobs");
        }
        state.ready.store(true, Ordering::SeqCst);
        println!("plover listening on http://{addr}");
        tracing::info!(%addr, "listening");
        let app = api::router(
            state.clone(),
            config.max_body_bytes,
            Duration::from_secs(config.request_timeout_secs),
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        tracing::info!(
            "shutting down; running jobs resume from their checkpoints at the next start"
        );
        state.engine.flush()?;
        anyhow::Ok(())
    })?;
    // Plugin calls still running belong to threads that end with the process.
    std::process::exit(0);
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
