//! `kv`: granted buckets, and the job's private state bucket.

use super::{CallState, Refusal};
use crate::connectors::{KvBackendError, KvBucket, KvFailure, MAX_BATCH};
use crate::runtime::contract::v0_2::plover::migration::kv;
use std::sync::Arc;
use wasmtime::component::Resource;

/// A bucket a guest has opened: the resource behind `kv.bucket`.
pub struct OpenBucket {
    binding: String,
    bucket: Arc<dyn KvBucket>,
}

fn check_batch(len: usize) -> Result<(), kv::KvError> {
    if len > MAX_BATCH {
        Err(kv::KvError::InvalidArgument(format!(
            "{len} items in one call; the limit is {MAX_BATCH}"
        )))
    } else {
        Ok(())
    }
}

/// A backend's answer as the guest sees it. Damage to the host's own database is not the
/// plugin's to handle: it stops the call, reported as data corruption (not retryable).
fn answer<T>(r: Result<T, KvBackendError>) -> wasmtime::Result<Result<T, kv::KvError>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) => match e.kind {
            KvFailure::Backend => Ok(Err(kv::KvError::Backend(e.message))),
            KvFailure::QuotaExceeded => Ok(Err(kv::KvError::InvalidArgument(e.message))),
            KvFailure::Corrupt => Err(super::StoreCorruption(e.message).into()),
        },
    }
}

impl CallState {
    fn bucket(
        &self,
        handle: &Resource<OpenBucket>,
    ) -> wasmtime::Result<(String, Arc<dyn KvBucket>)> {
        let open = self.table.get(handle)?;
        Ok((open.binding.clone(), open.bucket.clone()))
    }

    /// The bucket for a write of `len` entries, or why the write is refused.
    fn writable(
        &mut self,
        handle: &Resource<OpenBucket>,
        what: &str,
        len: usize,
    ) -> wasmtime::Result<Result<Arc<dyn KvBucket>, kv::KvError>> {
        let (binding, bucket) = self.bucket(handle)?;
        if self.read_only_binding(&binding) {
            let why = if self.read_only() {
                ""
            } else {
                " (the plugin declares it read-only)"
            };
            let what = format!("{what} on bucket '{binding}'{why}");
            return Ok(Err(kv::KvError::ReadOnly(self.refuse(
                "kv",
                Refusal::ReadOnly,
                what,
            ))));
        }
        Ok(check_batch(len).map(|()| bucket))
    }
}

impl kv::Host for CallState {}

impl kv::HostBucket for CallState {
    fn open(
        &mut self,
        binding: String,
    ) -> wasmtime::Result<Result<Resource<OpenBucket>, kv::KvError>> {
        let granted = match &self.job {
            Some(j) => j.grants.kv(&binding).cloned(),
            None => Err("no job: describe may not open buckets".into()),
        };
        match granted {
            Ok(bucket) => Ok(Ok(self.table.push(OpenBucket { binding, bucket })?)),
            Err(why) => Ok(Err(kv::KvError::NotGranted(self.refuse(
                "kv",
                Refusal::NotGranted,
                why,
            )))),
        }
    }

    fn job_state(&mut self) -> wasmtime::Result<Resource<OpenBucket>> {
        let Some(job) = &self.job else {
            wasmtime::bail!("job-state called outside a job (during describe)");
        };
        let bucket = job.grants.job_state().clone();
        Ok(self.table.push(OpenBucket {
            binding: "job-state".into(),
            bucket,
        })?)
    }

    fn get(
        &mut self,
        h: Resource<OpenBucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::KvError>> {
        let (_, bucket) = self.bucket(&h)?;
        answer(bucket.get_many(&[key]).map(|mut v| v.pop().flatten()))
    }

    fn set(
        &mut self,
        h: Resource<OpenBucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        self.set_many(h, vec![(key, value)])
    }

    fn delete(
        &mut self,
        h: Resource<OpenBucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, kv::KvError>> {
        Ok(self.delete_many(h, vec![key])?.map(|n| n > 0))
    }

    fn get_many(
        &mut self,
        h: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<Vec<u8>>>, kv::KvError>> {
        let (_, bucket) = self.bucket(&h)?;
        if let Err(e) = check_batch(keys.len()) {
            return Ok(Err(e));
        }
        answer(bucket.get_many(&keys))
    }

    fn set_many(
        &mut self,
        h: Resource<OpenBucket>,
        entries: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        match self.writable(&h, "set", entries.len())? {
            Ok(b) => answer(b.set_many(&entries)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn delete_many(
        &mut self,
        h: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u64, kv::KvError>> {
        match self.writable(&h, "delete", keys.len())? {
            Ok(b) => answer(b.delete_many(&keys)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn scan(
        &mut self,
        h: Resource<OpenBucket>,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<kv::ScanPage, kv::KvError>> {
        let (_, bucket) = self.bucket(&h)?;
        let limit = (limit as usize).clamp(1, MAX_BATCH);
        answer(
            bucket
                .scan(&prefix, cursor.as_deref(), limit)
                .map(|p| kv::ScanPage {
                    entries: p.entries,
                    next_cursor: p.next_cursor,
                }),
        )
    }

    fn count(
        &mut self,
        h: Resource<OpenBucket>,
        prefix: String,
    ) -> wasmtime::Result<Result<u64, kv::KvError>> {
        let (_, bucket) = self.bucket(&h)?;
        answer(bucket.count(&prefix))
    }

    fn ttl_many(
        &mut self,
        h: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<u64>>, kv::KvError>> {
        let (_, bucket) = self.bucket(&h)?;
        if let Err(e) = check_batch(keys.len()) {
            return Ok(Err(e));
        }
        answer(bucket.ttl_many(&keys))
    }

    fn set_many_with_ttl(
        &mut self,
        h: Resource<OpenBucket>,
        entries: Vec<(String, Vec<u8>, Option<u64>)>,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        match self.writable(&h, "set", entries.len())? {
            Ok(b) if !b.supports_expiry() && entries.iter().any(|(_, _, ttl)| ttl.is_some()) => {
                Ok(Err(kv::KvError::InvalidArgument(
                    "this bucket's backend has no key expiry".into(),
                )))
            }
            Ok(b) => answer(b.set_many_with_ttl(&entries)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn drop(&mut self, h: Resource<OpenBucket>) -> wasmtime::Result<()> {
        self.table.delete(h)?;
        Ok(())
    }
}
