//! Several Plover nodes on one PostgreSQL store. Any node answers any request; each job a run
//! works on is owned by one node through a lease row (owner, fencing epoch, expiry):
//!
//! - A node claims a job's lease before it changes the job, renews the leases it holds every
//!   third of the lease time, and gives a lease back when it is done. Every write for the job
//!   is checked against owner and epoch in its own transaction (`store::pg_store`), so a node
//!   that lost a lease (killed, frozen, cut off) never writes for that job again; and its own
//!   clock stops its plugin calls before the lease can lapse (`stop::LeaseClock`).
//! - A running job whose lease nobody holds (its node died, or handed it back while stopping)
//!   is taken over by the first node whose sweep finds it, and resumed from its checkpoints.
//! - An action sent to a node that does not own the job is forwarded to the owner
//!   ([`requests`]); committed changes are announced to every node ([`listener`]), so event
//!   streams on any node see every job with the same sequence numbers.
//!
//! The engine asks this module only "may I work on job X" ([`Ownership`]).

mod leases;
mod listener;
pub mod nodes;
mod requests;

pub use nodes::NodeView;
pub use requests::Apply;

use crate::engine::ownership::{Claim, Forwarded, Ownership};
use crate::engine::{Engine, Request};
use crate::store::{PgPool, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub(crate) const REQUESTS_CHANNEL: &str = "plover_requests";
pub(crate) const ANSWERS_CHANNEL: &str = "plover_answers";
pub(crate) const PLUGINS_CHANNEL: &str = "plover_plugins";
pub(crate) const ORPHANS_CHANNEL: &str = "plover_orphans";

/// How many orphaned jobs one sweep takes over at most (the rest wait for the next sweep, or
/// another node's).
const SWEEP_BATCH: usize = 16;
/// Answered requests are kept this long.
const KEEP_REQUESTS: Duration = Duration::from_secs(600);

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// What operators call this node (the node id adds a suffix unique to the process).
    pub node_name: String,
    /// How long a lease lasts without renewal: a dead node's jobs resume elsewhere within
    /// about this long.
    pub lease: Duration,
    /// Where this node's API is reached, shown in the node list.
    pub api_url: Option<String>,
}

/// A wake-up call for a worker thread that otherwise runs on a timer.
#[derive(Default)]
pub(crate) struct Wake {
    woken: Mutex<bool>,
    signal: Condvar,
}

impl Wake {
    pub fn wake(&self) {
        *self.woken.lock().expect("wake lock") = true;
        self.signal.notify_one();
    }

    /// Wait for a wake-up or `timeout`.
    fn wait(&self, timeout: Duration) {
        let woken = self.woken.lock().expect("wake lock");
        let (mut woken, _) = self
            .signal
            .wait_timeout_while(woken, timeout, |w| !*w)
            .expect("wake lock");
        *woken = false;
    }
}

pub struct Cluster {
    node: String,
    name: String,
    pool: PgPool,
    /// The store's URL, for the listening connection.
    url: String,
    lease: Duration,
    api_url: Option<String>,
    answers: requests::Answers,
    wake_requests: Wake,
    wake_sweep: Wake,
    /// The engine this node runs (taken out when the node leaves: the engine holds this
    /// cluster as its `Ownership`, and the two must not keep each other alive).
    engine: Mutex<Option<Engine>>,
    apply: OnceLock<Apply>,
    on_plugins: OnceLock<Box<dyn Fn() + Send + Sync>>,
    stopping: AtomicBool,
}

impl Cluster {
    /// This node's membership of the cluster on `pool` (the store at `url`); nothing runs
    /// until [`Cluster::start`].
    pub fn new(pool: PgPool, url: &str, config: ClusterConfig) -> Arc<Cluster> {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        Arc::new(Cluster {
            node: format!("{}-{suffix}", config.node_name),
            name: config.node_name,
            pool,
            url: url.to_string(),
            lease: config.lease,
            api_url: config.api_url,
            answers: Default::default(),
            wake_requests: Default::default(),
            wake_sweep: Default::default(),
            engine: Mutex::new(None),
            apply: OnceLock::new(),
            on_plugins: OnceLock::new(),
            stopping: AtomicBool::new(false),
        })
    }

    /// This node's id (unique per process).
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// How often leases are renewed and orphans looked for.
    pub fn beat_every(&self) -> Duration {
        self.lease / 3
    }

    /// The engine, until the node left the cluster.
    fn engine(&self) -> Option<Engine> {
        self.engine.lock().expect("engine lock").clone()
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn plugins_changed(&self) {
        if let Some(f) = self.on_plugins.get() {
            f();
        }
    }

    /// Register this node and start its threads: lease renewal, the sweep for orphaned jobs,
    /// forwarded requests (carried out with `apply`), and the listener (`on_plugins` is
    /// called when another node uploaded or removed a plugin). From now on `engine` changes
    /// a job only under its lease.
    pub fn start(
        self: &Arc<Self>,
        engine: Engine,
        apply: Apply,
        on_plugins: Box<dyn Fn() + Send + Sync>,
    ) -> Result<(), StoreError> {
        nodes::register(
            &self.pool,
            &nodes::Registration {
                id: &self.node,
                name: &self.name,
                api_url: self.api_url.as_deref(),
            },
        )?;
        engine.set_ownership(self.clone());
        *self.engine.lock().expect("engine lock") = Some(engine);
        let _ = self.apply.set(apply);
        let _ = self.on_plugins.set(on_plugins);
        let spawn = |name: &str, body: fn(Arc<Cluster>)| {
            let me = self.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || body(me))
                .expect("spawning a cluster thread");
        };
        spawn("plover-leases", renew_leases);
        spawn("plover-sweep", sweep);
        spawn("plover-requests", answer_requests);
        spawn("plover-listen", listener::run);
        tracing::info!(node = %self.node, lease_ms = self.lease.as_millis() as u64, "joined the cluster");
        Ok(())
    }

    /// The nodes sharing the store, with the jobs each holds.
    pub fn nodes(&self) -> Result<Vec<NodeView>, StoreError> {
        nodes::list(&self.pool, self.beat_every())
    }

    /// Tell the other nodes that the uploaded plugins changed.
    pub fn announce_plugins(&self) {
        let sent = self
            .pool
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                c.execute("SELECT pg_notify($1, '')", &[&PLUGINS_CHANNEL])
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not tell other nodes of a plugin change");
        }
    }

    /// Leave the cluster: every run here hands its job over (waiting at most `within`), the
    /// leases go back, and the node is marked stopped.
    pub fn stop(&self, within: Duration) {
        if let Some(engine) = self.engine() {
            engine.hand_off_all(within);
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.engine.lock().expect("engine lock").take();
        if let Err(e) = nodes::stopped(&self.pool, &self.node) {
            tracing::warn!(error = %e, "could not record this node's stop");
        }
    }
}

impl Ownership for Cluster {
    fn node(&self) -> &str {
        &self.node
    }

    fn claim(&self, job: &str) -> Result<Claim, StoreError> {
        leases::claim(&self.pool, &self.node, job, self.lease)
    }

    fn release(&self, job: &str, epoch: u64) {
        if let Err(e) = leases::release(&self.pool, &self.node, job, epoch) {
            // It runs out by itself.
            tracing::warn!(job, error = %e, "could not give a lease back");
        }
    }

    fn forward(
        &self,
        job: &str,
        owner: &str,
        request: Request,
        actor: &str,
        wait: Duration,
    ) -> Result<Forwarded, StoreError> {
        requests::forward(&self.pool, &self.answers, job, owner, request, actor, wait)
    }

    fn lease_time(&self) -> Duration {
        self.lease
    }
}

/// Renew this node's leases every beat; a lease not renewed is lost at once, and one that
/// could not be renewed in time lapses by its own clock.
fn renew_leases(cluster: Arc<Cluster>) {
    let mut failing_since: Option<Instant> = None;
    while !cluster.is_stopping() {
        let asked = Instant::now();
        match leases::renew(&cluster.pool, &cluster.node, cluster.lease) {
            Ok(renewed) => {
                let until = leases::local_until(asked, cluster.lease);
                if let Some(engine) = cluster.engine() {
                    engine.leases_renewed(&renewed, asked, until);
                }
                if failing_since.take().is_some() {
                    tracing::info!("leases renewed again");
                }
                if let Err(e) = nodes::beat(&cluster.pool, &cluster.node) {
                    tracing::warn!(error = %e, "heartbeat");
                }
            }
            Err(e) => {
                if failing_since.is_none() {
                    tracing::warn!(error = %e, "could not renew leases; this node's runs stop when their leases would lapse");
                    failing_since = Some(asked);
                }
            }
        }
        let spent = asked.elapsed();
        std::thread::sleep(cluster.beat_every().saturating_sub(spent));
    }
}

/// Every beat (or when a lease is given back), take over running jobs nobody holds.
fn sweep(cluster: Arc<Cluster>) {
    let mut last_prune = Instant::now();
    while !cluster.is_stopping() {
        match leases::orphans(&cluster.pool, SWEEP_BATCH) {
            Ok(ids) => {
                for id in ids {
                    let Some(engine) = cluster.engine() else {
                        break;
                    };
                    match engine.take_over(&id) {
                        Ok(true) => {
                            tracing::info!(job = %id, node = %cluster.node, "took over a job nobody ran")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(job = %id, error = %e, "could not take a job over")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "looking for jobs nobody runs"),
        }
        if last_prune.elapsed() > Duration::from_secs(60) {
            last_prune = Instant::now();
            if let Err(e) = requests::prune(&cluster.pool, KEEP_REQUESTS) {
                tracing::warn!(error = %e, "pruning answered requests");
            }
        }
        cluster.wake_sweep.wait(cluster.beat_every());
    }
}

/// Carry out the requests other nodes forward here, when told of them (and every beat, in case
/// a notice was missed).
fn answer_requests(cluster: Arc<Cluster>) {
    while !cluster.is_stopping() {
        let apply = cluster.apply.get().expect("started");
        if let Err(e) = requests::answer_waiting(&cluster.pool, &cluster.node, apply) {
            tracing::warn!(error = %e, "answering forwarded requests");
        }
        cluster.wake_requests.wait(cluster.beat_every());
    }
}
