//! Process-wide metrics, updated where things happen and rendered for `/metrics` in the
//! Prometheus text format. A scrape costs the same whatever the number of jobs: counters and
//! histograms are kept as events occur (they never go down, whatever is deleted later), and
//! the one gauge read at scrape time (jobs by state) comes from the store's counters.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::LazyLock;
use std::time::Duration;

pub struct Metrics {
    registry: Registry,
    pub jobs: IntGaugeVec,
    pub objects: IntCounterVec,
    pub step_seconds: Histogram,
    pub call_seconds: Histogram,
    pub kills: IntCounterVec,
    pub refusals: IntCounterVec,
    pub unauthenticated: IntCounter,
    pub limits: IntCounterVec,
    pub store_seconds: HistogramVec,
    pub worker_tasks: IntCounterVec,
}

fn build() -> Metrics {
    let registry = Registry::new();
    let jobs = IntGaugeVec::new(
        Opts::new("plover_jobs", "Migration jobs by state."),
        &["state"],
    )
    .expect("valid metric");
    let objects = IntCounterVec::new(
        Opts::new(
            "plover_objects_migrated_total",
            "Object results committed, by status.",
        ),
        &["status"],
    )
    .expect("valid metric");
    let step_seconds = Histogram::with_opts(
        HistogramOpts::new(
            "plover_step_duration_seconds",
            "Duration of completed steps (from the step's first start).",
        )
        .buckets(vec![
            0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0,
        ]),
    )
    .expect("valid metric");
    let call_seconds = Histogram::with_opts(
        HistogramOpts::new(
            "plover_plugin_call_seconds",
            "Latency of plugin calls (instantiation included).",
        )
        .buckets(vec![
            0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0, 60.0,
        ]),
    )
    .expect("valid metric");
    let kills = IntCounterVec::new(
        Opts::new(
            "plover_sandbox_kills_total",
            "Plugin calls the sandbox stopped, by cause.",
        ),
        &["cause"],
    )
    .expect("valid metric");
    let refusals = IntCounterVec::new(
        Opts::new(
            "plover_connector_refusals_total",
            "Connector operations the host refused, by connector and reason.",
        ),
        &["connector", "reason"],
    )
    .expect("valid metric");
    let unauthenticated = IntCounter::new(
        "plover_unauthenticated_requests_total",
        "Mutating requests that carried no valid token (counted, not audited one by one).",
    )
    .expect("valid metric");
    let limits = IntCounterVec::new(
        Opts::new(
            "plover_plugin_limits_total",
            "Values from plugins that a bound cut short or refused, by what was bounded.",
        ),
        &["what"],
    )
    .expect("valid metric");
    let store_seconds = HistogramVec::new(
        HistogramOpts::new(
            "plover_store_commit_seconds",
            "Time to make a commit durable, by backend.",
        )
        .buckets(vec![
            0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
        ]),
        &["backend"],
    )
    .expect("valid metric");
    let worker_tasks = IntCounterVec::new(
        Opts::new(
            "plover_worker_tasks_total",
            "Tasks of worker queues, by queue and event (claimed, completed, failed, lease-lost, stopped).",
        ),
        &["queue", "event"],
    )
    .expect("valid metric");
    for c in [
        Box::new(jobs.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(worker_tasks.clone()),
        Box::new(objects.clone()),
        Box::new(step_seconds.clone()),
        Box::new(call_seconds.clone()),
        Box::new(kills.clone()),
        Box::new(refusals.clone()),
        Box::new(unauthenticated.clone()),
        Box::new(limits.clone()),
        Box::new(store_seconds.clone()),
    ] {
        registry.register(c).expect("metric registered once");
    }
    Metrics {
        registry,
        jobs,
        objects,
        step_seconds,
        call_seconds,
        kills,
        refusals,
        unauthenticated,
        limits,
        store_seconds,
        worker_tasks,
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = build();
    #[cfg(feature = "server")]
    for status in crate::engine::state::JobStatus::ALL {
        m.jobs.with_label_values(&[status.as_str()]);
    }
    for status in ["success", "error", "skipped"] {
        m.objects.with_label_values(&[status]);
    }
    m
});

pub fn get() -> &'static Metrics {
    &METRICS
}

/// Object results committed, by status.
pub fn objects_recorded(success: u64, error: u64, skipped: u64) {
    let m = get();
    m.objects.with_label_values(&["success"]).inc_by(success);
    m.objects.with_label_values(&["error"]).inc_by(error);
    m.objects.with_label_values(&["skipped"]).inc_by(skipped);
}

/// A step completed after `took`.
pub fn step_completed(took: Duration) {
    get().step_seconds.observe(took.as_secs_f64());
}

/// A plugin value was cut short or refused by the bound on `what`.
/// A worker task of `queue` was claimed or ended (`event`).
pub fn worker_task(queue: &str, event: &str) {
    get().worker_tasks.with_label_values(&[queue, event]).inc();
}

pub fn limit_hit(what: &str) {
    get().limits.with_label_values(&[what]).inc();
}

/// Everything, in the Prometheus text format; with `node`, every series carries it as a
/// `node` label (several nodes sharing one store are scraped apart).
pub fn render(node: Option<&str>) -> String {
    crate::runtime::stats::register_labels();
    let mut families = get().registry.gather();
    if let Some(node) = node {
        for family in &mut families {
            for metric in family.mut_metric() {
                let mut label = prometheus::proto::LabelPair::default();
                label.set_name("node".into());
                label.set_value(node.into());
                let mut labels = metric.take_label();
                labels.push(label);
                metric.set_label(labels);
            }
        }
    }
    let mut out = vec![];
    TextEncoder::new()
        .encode(&families, &mut out)
        .expect("text encoding into memory");
    String::from_utf8(out).expect("the text format is UTF-8")
}
