//! [`JobStore`] on sled. One tree holds every job, so one `apply_batch` is one atomic commit,
//! and [`GroupFlush`] makes it durable before `commit` returns. See [`keys`] for the layout
//! and [`event_chunks`] for how a job's feed is packed.

mod event_chunks;
mod group_flush;
mod job_state;
mod keys;

pub use group_flush::GroupFlush;
pub use job_state::SledJobState;

use super::records::{
    ObjectSource, StagedChunk, chunk_results, decode_chunk, join_record, json_error, read_objects,
    split_record,
};
use super::{
    Commit, JobQuery, JobStore, JobSummaries, ObjectSegment, Quarantined, Reported, StoreError,
    StoredObject,
};
use crate::engine::job::{FeedEvent, JobRecord, JobSummary};
use crate::engine::state::JobStatus;
use keys::IndexMeta;
use std::sync::{Arc, Mutex};

pub struct SledJobStore {
    tree: sled::Tree,
    flush: Arc<GroupFlush>,
    job_state: SledJobState,
    /// Held while index entries and counters move, so counters stay exact.
    index_lock: Mutex<()>,
    /// Orders feed reads against commits that pack events (see [`event_chunks`]).
    pack_lock: event_chunks::PackLock,
}

/// A sled error, classified: corruption is reported as such, everything else may pass.
pub(crate) fn sled_error(what: &str, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } => {
            StoreError::corrupt(format!("{what}: the embedded database is corrupt ({e})"))
        }
        other => StoreError::unavailable(format!("{what}: {other}")),
    }
}

/// Open the sled database in `path`. sled panics on some kinds of damage instead of returning
/// an error; that is caught here and reported as corruption, with the directory named.
///
/// A new database compresses its pages (zstd at its fastest level): JSON records compress
/// well, and sled's log-structured writes multiply what is stored (BENCHMARKS.md). A database
/// keeps the setting it was made with.
pub fn open_database(path: &std::path::Path) -> Result<sled::Db, StoreError> {
    open_database_with_cache(path, DEFAULT_CACHE_BYTES)
}

/// sled's page-cache budget unless configured otherwise. sled counts a page by its size on
/// disk, compressed, but keeps it decompressed: with JSON compressing 20-30 fold, the
/// memory a budget costs is that many times larger (measured: 64 MiB let the host reach
/// 954 MiB recording ten million results, 1 MiB held it at 145 MiB, at the same speed;
/// BENCHMARKS.md). Small, so the host's memory stays flat as the data grows.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 20;

/// [`open_database`] with a page cache of at most `cache_bytes`.
pub fn open_database_with_cache(
    path: &std::path::Path,
    cache_bytes: u64,
) -> Result<sled::Db, StoreError> {
    let what = format!("the database in {}", path.display());
    let compressed = match std::fs::read_to_string(path.join("conf")) {
        Ok(conf) => conf.contains("use_compression: true"),
        Err(_) => true,
    };
    without_panics(&what, || {
        sled::Config::new()
            .path(path)
            .use_compression(compressed)
            .compression_factor(1)
            .cache_capacity(cache_bytes)
            .open()
    })?
    .map_err(|e| sled_error(&format!("opening {what}"), e))
}

/// Run `f`, turning a panic inside sled (its answer to some damage) into a corruption error.
/// Only for start-up, single-threaded: the panic hook is silenced meanwhile.
fn without_panics<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, StoreError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "no reason given".into());
        StoreError::corrupt(format!("{what} is damaged: sled could not read it ({why})"))
    })
}

/// How many keys one batch of a bulk deletion removes.
const DELETE_CHUNK: usize = 10_000;

impl SledJobStore {
    /// The job store of `flush`'s database. Finishes deletions a crash interrupted.
    pub fn open(flush: Arc<GroupFlush>) -> Result<Self, StoreError> {
        let db = flush.db().clone();
        let tree = db
            .open_tree("plover/jobs")
            .map_err(|e| sled_error("opening the job tree", e))?;
        let job_state = SledJobState::open(flush.clone())?;
        let store = SledJobStore {
            tree,
            flush,
            job_state,
            index_lock: Mutex::new(()),
            pack_lock: Default::default(),
        };
        for item in store.tree.scan_prefix(keys::TOMBSTONES).keys() {
            let k = item.map_err(|e| sled_error("reading pending deletions", e))?;
            let id = String::from_utf8_lossy(&k[keys::TOMBSTONES.len()..]).into_owned();
            store.remove_bulk(&id)?;
        }
        Ok(store)
    }

    /// The job store of `db`, with a group flush of its own (one per database: share it with
    /// [`SledJobStore::open`] when other parts of the host write the same database).
    pub fn open_db(db: &sled::Db) -> Result<Self, StoreError> {
        Self::open(Arc::new(GroupFlush::new(db.clone())))
    }

    /// The jobs' private state buckets, kept in the same database.
    pub fn job_state(&self) -> SledJobState {
        self.job_state.clone()
    }

    /// Set how many bytes each job's state bucket may hold.
    pub fn with_job_state_quota(mut self, bytes: u64) -> Self {
        self.job_state = self.job_state.with_quota(bytes);
        self
    }

    /// Read every key of the database (sled checks each page's checksum as it reads it) and
    /// every job record, quarantining records that cannot be read back. Run at start-up, so
    /// damage is reported as such then, not as a failure of some later call.
    pub fn check_integrity(&self) -> Result<IntegrityReport, StoreError> {
        let started = std::time::Instant::now();
        let db = self.flush.db();
        without_panics("the database", || db.checksum())?
            .map_err(|e| sled_error("checking the database", e))?;
        let mut report = IntegrityReport::default();
        let mut unreadable = vec![];
        for item in self.tree.scan_prefix(b"j/") {
            let (k, v) = item.map_err(|e| sled_error("checking job records", e))?;
            report.records += 1;
            let id = String::from_utf8_lossy(&k[2..]).into_owned();
            let definition = self
                .tree
                .get(keys::definition(&id))
                .map_err(|e| sled_error("checking job records", e))?;
            if let Err(e) = join_record(&v, definition.as_deref()) {
                unreadable.push((id, format!("unreadable record: {e}")));
            }
        }
        for (id, reason) in unreadable {
            self.quarantine(&id, &reason)?;
            report.quarantined.push(id);
        }
        report.took = started.elapsed();
        Ok(report)
    }

    fn meta(&self, id: &str) -> Result<Option<IndexMeta>, StoreError> {
        match self
            .tree
            .get(keys::meta(id))
            .map_err(|e| sled_error("reading a job's index entry", e))?
        {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).map_err(|e| json_error("a job's index entry", e))?,
            )),
            None => Ok(None),
        }
    }

    fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        Ok(self
            .tree
            .get(key)
            .map_err(|e| sled_error("reading a counter", e))?
            .map(|v| keys::tail_number(&v))
            .unwrap_or(0))
    }

    /// Put into `batch` the index moves and counter changes from `old` to `new` (either may
    /// be absent). Call with `index_lock` held until the batch is applied.
    fn move_indexes(
        &self,
        batch: &mut sled::Batch,
        id: &str,
        old: Option<&IndexMeta>,
        new: Option<&IndexMeta>,
    ) -> Result<(), StoreError> {
        if let Some(old) = old {
            for k in old.index_keys(id) {
                batch.remove(k);
            }
            let c = keys::counter(&old.plugin, old.status);
            let n = self.counter(&c)?.saturating_sub(1);
            batch.insert(c, &n.to_be_bytes()[..]);
        }
        if let Some(new) = new {
            for k in new.index_keys(id) {
                batch.insert(k, &[][..]);
            }
            let c = keys::counter(&new.plugin, new.status);
            // Same counter as the old one: count from what was just decremented.
            let base = match old {
                Some(o) if keys::counter(&o.plugin, o.status) == c => {
                    self.counter(&c)?.saturating_sub(1)
                }
                _ => self.counter(&c)?,
            };
            batch.insert(c, &(base + 1).to_be_bytes()[..]);
        }
        Ok(())
    }

    fn apply(&self, batch: sled::Batch, what: &str) -> Result<(), StoreError> {
        self.tree
            .apply_batch(batch)
            .map_err(|e| sled_error(what, e))?;
        self.flush.sync()
    }

    /// [`Self::apply`] for a commit; one that moves events into chunks is applied while no
    /// reader is between two keys of a feed.
    fn apply_commit(&self, batch: sled::Batch, packs: bool) -> Result<(), StoreError> {
        let what = "committing a job";
        if !packs {
            return self.apply(batch, what);
        }
        {
            let _no_readers = self.pack_lock.write().expect("pack lock");
            self.tree
                .apply_batch(batch)
                .map_err(|e| sled_error(what, e))?;
        }
        self.flush.sync()
    }

    /// The job's last segment of visible object results.
    fn last_segment(&self, id: &str) -> Result<Option<ObjectSegment>, StoreError> {
        match self
            .tree
            .scan_prefix(keys::numbered_prefix("g", id))
            .next_back()
        {
            Some(item) => {
                let (_, v) = item.map_err(|e| sled_error("reading object results", e))?;
                Ok(Some(
                    serde_json::from_slice(&v).map_err(|e| json_error("a result segment", e))?,
                ))
            }
            None => Ok(None),
        }
    }

    /// Keep an unreadable record aside: out of every index and count, its bytes saved.
    fn quarantine(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        tracing::error!(
            job = id,
            reason,
            "quarantining a job record that cannot be read back"
        );
        let raw = self
            .tree
            .get(keys::record(id))
            .map_err(|e| sled_error("reading a record", e))?;
        let _guard = self.index_lock.lock().expect("index lock");
        let mut batch = sled::Batch::default();
        let meta = self.meta(id).unwrap_or(None);
        self.move_indexes(&mut batch, id, meta.as_ref(), None)?;
        batch.remove(keys::record(id));
        batch.remove(keys::definition(id));
        batch.remove(keys::meta(id));
        batch.remove(keys::summary(id));
        if let Some(raw) = raw {
            batch.insert(keys::quarantined_bytes(id), raw);
        }
        let entry = Quarantined {
            id: id.to_string(),
            reason: reason.chars().take(1000).collect(),
            at: chrono::Utc::now(),
        };
        batch.insert(
            keys::quarantine(id),
            serde_json::to_vec(&entry).expect("serialises"),
        );
        self.apply(batch, "quarantining a record")
    }

    /// Remove everything of a deleted job but its tombstone, chunk by chunk, then the tombstone.
    fn remove_bulk(&self, id: &str) -> Result<(), StoreError> {
        for prefix in ["e", "l", "E", "L", "r", "g"] {
            loop {
                let chunk: Vec<sled::IVec> = self
                    .tree
                    .scan_prefix(keys::numbered_prefix(prefix, id))
                    .keys()
                    .take(DELETE_CHUNK)
                    .collect::<Result<_, _>>()
                    .map_err(|e| sled_error("deleting a job", e))?;
                if chunk.is_empty() {
                    break;
                }
                let mut batch = sled::Batch::default();
                for k in chunk {
                    batch.remove(k);
                }
                self.tree
                    .apply_batch(batch)
                    .map_err(|e| sled_error("deleting a job", e))?;
            }
        }
        self.job_state.remove_all(id)?;
        let mut batch = sled::Batch::default();
        batch.remove(keys::tombstone(id));
        self.apply(batch, "deleting a job")
    }
}

impl ObjectSource for SledJobStore {
    fn segment_at_or_before(
        &self,
        id: &str,
        index: u64,
    ) -> Result<Option<(u64, ObjectSegment)>, StoreError> {
        let prefix = keys::numbered_prefix("g", id);
        match self
            .tree
            .range(prefix.clone()..=keys::numbered("g", id, index))
            .next_back()
        {
            Some(item) => {
                let (k, v) = item.map_err(|e| sled_error("reading object results", e))?;
                let seg: ObjectSegment =
                    serde_json::from_slice(&v).map_err(|e| json_error("a result segment", e))?;
                Ok(Some((keys::tail_number(&k), seg)))
            }
            None => Ok(None),
        }
    }

    fn chunk_at_or_before(
        &self,
        id: &str,
        step: u32,
        staged: u64,
    ) -> Result<Option<(u64, StagedChunk)>, StoreError> {
        match self
            .tree
            .range(keys::staged(id, step, 0)..=keys::staged(id, step, staged))
            .next_back()
        {
            Some(item) => {
                let (k, v) = item.map_err(|e| sled_error("reading object results", e))?;
                Ok(Some((keys::tail_number(&k), decode_chunk(&v)?)))
            }
            None => Ok(None),
        }
    }
}

/// What the start-up check found.
#[derive(Debug, Default)]
pub struct IntegrityReport {
    pub records: u64,
    pub quarantined: Vec<String>,
    pub took: std::time::Duration,
}

impl JobStore for SledJobStore {
    fn commit(&self, c: Commit<'_>) -> Result<(), StoreError> {
        let id = &c.record.id;
        let mut batch = sled::Batch::default();
        let (state, definition) = split_record(c.record)?;
        batch.insert(keys::record(id), state);
        // The rarely changing parts are rewritten only when they changed: each commit of a
        // running job would otherwise rewrite its plan and options (disk grows with rewrites).
        let summary = serde_json::to_vec(&crate::engine::job::summary(c.record))
            .map_err(|e| json_error("a summary", e))?;
        for (key, value) in [
            (keys::definition(id), definition),
            (keys::summary(id), summary),
        ] {
            let stored = self
                .tree
                .get(&key)
                .map_err(|e| sled_error("committing a job", e))?;
            if stored.as_deref() != Some(value.as_slice()) {
                batch.insert(key, value);
            }
        }
        let packs = event_chunks::write(
            &self.tree,
            &mut batch,
            id,
            c.append,
            c.drop_oldest_logs,
            !c.record.status.is_running(),
        )?;
        // A segment that continues the previous one (same step, next positions) extends it:
        // a step committing a checkpoint at a time would otherwise leave a key per checkpoint.
        let mut last = match c.segments {
            [] => None,
            _ => self.last_segment(id)?,
        };
        for seg in c.segments {
            let extended = match &mut last {
                Some(l)
                    if l.step == seg.step
                        && l.first_index + l.count == seg.first_index
                        && l.first_staged + l.count == seg.first_staged =>
                {
                    l.count += seg.count;
                    *l
                }
                _ => *seg,
            };
            batch.insert(
                keys::numbered("g", id, extended.first_index),
                serde_json::to_vec(&extended).expect("serialises"),
            );
            last = Some(extended);
        }
        let meta = IndexMeta {
            status: c.record.status,
            plugin: c.record.plugin.name.clone(),
            created: c.record.created_at.timestamp_micros(),
        };
        let old = self.meta(id)?;
        if old.as_ref() == Some(&meta) {
            return self.apply_commit(batch, packs);
        }
        let _guard = self.index_lock.lock().expect("index lock");
        self.move_indexes(&mut batch, id, old.as_ref(), Some(&meta))?;
        batch.insert(
            keys::meta(id),
            serde_json::to_vec(&meta).expect("serialises"),
        );
        self.apply_commit(batch, packs)
    }

    fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let Some(v) = self
            .tree
            .get(keys::record(id))
            .map_err(|e| sled_error("reading a job", e))?
        else {
            return Ok(None);
        };
        let definition = self
            .tree
            .get(keys::definition(id))
            .map_err(|e| sled_error("reading a job", e))?;
        match join_record(&v, definition.as_deref()) {
            Ok(record) => Ok(Some(record)),
            Err(e) => {
                self.quarantine(id, &format!("unreadable record: {e}"))?;
                Ok(None)
            }
        }
    }

    fn list(&self, q: &JobQuery) -> Result<JobSummaries, StoreError> {
        let prefix = keys::index_prefix(q.status, q.plugin.as_deref());
        let upper = match &q.cursor {
            Some(c) => {
                // Any bytes are a position in the index; the API refuses what is not hex.
                let suffix = hex::decode(c).unwrap_or_default();
                [prefix.clone(), suffix].concat()
            }
            None => keys::prefix_end(&prefix),
        };
        let mut items = Vec::with_capacity(q.limit.min(500));
        let mut last_suffix = None;
        let mut more = false;
        for item in self.tree.range(prefix.clone()..upper).rev().skip(q.offset) {
            let (k, _) = item.map_err(|e| sled_error("listing jobs", e))?;
            if items.len() == q.limit {
                more = true;
                break;
            }
            let suffix = &k[prefix.len()..];
            let id = String::from_utf8_lossy(&suffix[8..]).into_owned();
            let Some(v) = self
                .tree
                .get(keys::summary(&id))
                .map_err(|e| sled_error("listing jobs", e))?
            else {
                continue;
            };
            let summary: JobSummary =
                serde_json::from_slice(&v).map_err(|e| json_error("a job summary", e))?;
            items.push(summary);
            last_suffix = Some(suffix.to_vec());
        }
        Ok(JobSummaries {
            items,
            next_cursor: if more {
                last_suffix.map(hex::encode)
            } else {
                None
            },
        })
    }

    fn count(&self, status: Option<JobStatus>, plugin: Option<&str>) -> Result<u64, StoreError> {
        let mut total = 0;
        for item in self.tree.scan_prefix(keys::COUNTERS) {
            let (k, v) = item.map_err(|e| sled_error("counting jobs", e))?;
            let text = String::from_utf8_lossy(&k[keys::COUNTERS.len()..]).into_owned();
            let Some((p, s)) = text.split_once('\0') else {
                continue;
            };
            if plugin.is_some_and(|want| want != p) || status.is_some_and(|want| want.as_str() != s)
            {
                continue;
            }
            total += keys::tail_number(&v);
        }
        Ok(total)
    }

    fn ids_with_status(
        &self,
        statuses: &[JobStatus],
        plugin: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = vec![];
        for &status in statuses {
            let prefix = keys::index_prefix(Some(status), plugin);
            for item in self.tree.scan_prefix(&prefix).keys() {
                let k = item.map_err(|e| sled_error("finding jobs", e))?;
                out.push(String::from_utf8_lossy(&k[prefix.len() + 8..]).into_owned());
            }
        }
        Ok(out)
    }

    fn events_after(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FeedEvent>, StoreError> {
        let _packing_waits = self.pack_lock.read().expect("pack lock");
        event_chunks::read(&self.tree, id, after, limit, false)
    }

    fn logs_after(&self, id: &str, after: u64, limit: usize) -> Result<Vec<FeedEvent>, StoreError> {
        let _packing_waits = self.pack_lock.read().expect("pack lock");
        event_chunks::read(&self.tree, id, after, limit, true)
    }

    fn stage_reports(
        &self,
        id: &str,
        _fence: Option<u64>,
        step: u32,
        first_staged: u64,
        reports: &[Reported<'_>],
    ) -> Result<(), StoreError> {
        let count: usize = reports.iter().map(|r| r.objects.len()).sum();
        if count == 0 {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        // Chunks an earlier, uncommitted attempt staged inside this range would shadow it.
        let first = keys::staged(id, step, first_staged);
        let end = keys::staged(id, step, first_staged + count as u64);
        for k in self.tree.range(first..end).keys() {
            batch.remove(k.map_err(|e| sled_error("staging object results", e))?);
        }
        for (first, chunk) in chunk_results(first_staged, reports)? {
            batch.insert(keys::staged(id, step, first), chunk);
        }
        // Not synced: the commit that makes them visible flushes them with it (sled's log is
        // written in order, so what a durable commit follows is durable too).
        self.tree
            .apply_batch(batch)
            .map_err(|e| sled_error("staging object results", e))
    }

    fn objects_from(
        &self,
        id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StoreError> {
        read_objects(self, id, from, limit)
    }

    fn delete(&self, id: &str, _fence: Option<u64>) -> Result<(), StoreError> {
        {
            let _guard = self.index_lock.lock().expect("index lock");
            let mut batch = sled::Batch::default();
            let meta = self.meta(id)?;
            self.move_indexes(&mut batch, id, meta.as_ref(), None)?;
            batch.remove(keys::record(id));
            batch.remove(keys::definition(id));
            batch.remove(keys::meta(id));
            batch.remove(keys::summary(id));
            batch.insert(keys::tombstone(id), &[][..]);
            self.apply(batch, "deleting a job")?;
        }
        self.remove_bulk(id)
    }

    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        self.tree
            .scan_prefix(keys::QUARANTINE)
            .values()
            .map(|v| {
                let v = v.map_err(|e| sled_error("reading quarantined records", e))?;
                serde_json::from_slice(&v).map_err(|e| json_error("a quarantine entry", e))
            })
            .collect()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.flush.sync()
    }
}
