//! A key-value bucket backed by Redis: every key lives under the connection's `key_prefix`,
//! which the plugin never sees. Connections come from a pool shared by every job.
//!
//! Scans use `SCAN ... MATCH`, whose cursor is Redis's own: pages come in Redis's order, and a
//! key can (rarely, while Redis rehashes) be returned twice, never missed.

use super::{KvBackendError, KvBucket, ScanPage};
use std::time::Duration;

type Pool = r2d2::Pool<redis::Client>;

pub struct RedisBucket {
    pool: Pool,
    key_prefix: String,
}

fn backend(e: impl std::fmt::Display) -> KvBackendError {
    KvBackendError::backend(format!("redis: {e}"))
}

/// Escape the glob characters of `MATCH` so a prefix matches literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisBucket {
    /// A bucket over the Redis at `url`. Connects lazily: a server that is down fails the
    /// first operation (as a backend error the plugin sees), not the host's start.
    pub fn new(url: &str, key_prefix: &str) -> Result<Self, String> {
        Self::with_pool_size(url, key_prefix, 8)
    }

    /// [`RedisBucket::new`] with at most `max_connections` pooled connections.
    pub fn with_pool_size(
        url: &str,
        key_prefix: &str,
        max_connections: u32,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        let pool = r2d2::Pool::builder()
            .max_size(max_connections.max(1))
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(5))
            .test_on_check_out(false)
            .build_unchecked(client);
        Ok(RedisBucket {
            pool,
            key_prefix: key_prefix.to_string(),
        })
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<redis::Client>, KvBackendError> {
        self.pool.get().map_err(backend)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// One `SCAN` round: (next cursor, keys without the connection's prefix).
    fn scan_once(
        &self,
        conn: &mut redis::Connection,
        pattern: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<String>), KvBackendError> {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count)
            .query(conn)
            .map_err(backend)?;
        let keys = keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.key_prefix).map(str::to_string))
            .collect();
        Ok((next, keys))
    }

    /// `MGET` of `keys` on a connection the caller holds already.
    fn get_on(
        &self,
        conn: &mut redis::Connection,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvBackendError> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let full: Vec<String> = keys.iter().map(|k| self.full(k)).collect();
        redis::cmd("MGET").arg(&full).query(conn).map_err(backend)
    }
}

impl KvBucket for RedisBucket {
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvBackendError> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        self.get_on(&mut *self.conn()?, keys)
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvBackendError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (k, v) in entries {
            cmd.arg(self.full(k)).arg(v.as_slice());
        }
        cmd.query::<()>(&mut *self.conn()?).map_err(backend)
    }

    fn delete_many(&self, keys: &[String]) -> Result<u64, KvBackendError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let full: Vec<String> = keys.iter().map(|k| self.full(k)).collect();
        redis::cmd("DEL")
            .arg(&full)
            .query(&mut *self.conn()?)
            .map_err(backend)
    }

    /// Keys come from `SCAN` rounds until `limit` are gathered or the scan ends; one round can
    /// overshoot `limit` a little, since a `SCAN` cursor cannot resume inside a round.
    fn scan(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ScanPage, KvBackendError> {
        let mut at: u64 = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| {
                KvBackendError::backend(format!("'{c}' is not a Redis scan cursor"))
            })?,
        };
        let pattern = format!("{}*", glob_escape(&self.full(prefix)));
        let mut conn = self.conn()?;
        let mut keys = vec![];
        loop {
            let (next, mut found) = self.scan_once(&mut conn, &pattern, at, limit - keys.len())?;
            keys.append(&mut found);
            at = next;
            if at == 0 || keys.len() >= limit {
                break;
            }
        }
        // On the connection the scan holds: taking a second one from the pool while holding
        // this one starves the pool when many jobs scan at once.
        let values = self.get_on(&mut conn, &keys)?;
        // A key that expired between SCAN and MGET is simply gone.
        let entries = keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        Ok(ScanPage {
            entries,
            next_cursor: (at != 0).then(|| at.to_string()),
        })
    }

    fn count(&self, prefix: &str) -> Result<u64, KvBackendError> {
        let pattern = format!("{}*", glob_escape(&self.full(prefix)));
        let mut conn = self.conn()?;
        let (mut at, mut total) = (0u64, 0u64);
        loop {
            let (next, found) = self.scan_once(&mut conn, &pattern, at, 1000)?;
            total += found.len() as u64;
            at = next;
            if at == 0 {
                return Ok(total);
            }
        }
    }

    fn supports_expiry(&self) -> bool {
        true
    }

    fn ttl_many(&self, keys: &[String]) -> Result<Vec<Option<u64>>, KvBackendError> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("PTTL").arg(self.full(k));
        }
        // PTTL answers -2 for a missing key and -1 for one without expiry.
        let ttls: Vec<i64> = pipe.query(&mut *self.conn()?).map_err(backend)?;
        Ok(ttls.into_iter().map(|t| u64::try_from(t).ok()).collect())
    }

    fn set_many_with_ttl(
        &self,
        entries: &[(String, Vec<u8>, Option<u64>)],
    ) -> Result<(), KvBackendError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (k, v, ttl) in entries {
            let cmd = pipe.cmd("SET").arg(self.full(k)).arg(v.as_slice());
            if let Some(ms) = ttl {
                cmd.arg("PX").arg((*ms).max(1));
            }
            cmd.ignore();
        }
        pipe.query::<()>(&mut *self.conn()?).map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn match_patterns_treat_prefixes_literally() {
        assert_eq!(super::glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(super::glob_escape("session:"), "session:");
    }
}
