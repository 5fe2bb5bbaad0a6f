//! How every backend lays out what it stores, so the backends differ only in where bytes go:
//! a record as two JSON documents (its changing part, its definition), object results staged
//! in chunks, and the walk from visible positions to staged chunks.

use super::{ObjectSegment, Reported, StoreError, StoredObject};
use crate::engine::job::JobRecord;
use crate::model::ObjectResult;
use chrono::{DateTime, Utc};

pub(crate) fn json_error(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::corrupt(format!("{what}: {e}"))
}

/// The fields of a record that change rarely (creation, re-planning, a dry run, an approval):
/// stored apart, so the commits of a running job do not rewrite them.
const DEFINITION_FIELDS: [&str; 12] = [
    "created_at",
    "created_by",
    "handler",
    "plugin",
    "spec",
    "grants",
    "options",
    "plan",
    "plan_hash",
    "dry_run",
    "approval",
    "audit",
];

/// A record as two JSON documents: its changing part and its definition.
pub(crate) fn split_record(record: &JobRecord) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    let serde_json::Value::Object(mut state) =
        serde_json::to_value(record).map_err(|e| json_error("a record", e))?
    else {
        return Err(StoreError::corrupt("a record is not a JSON object"));
    };
    let definition: serde_json::Map<String, serde_json::Value> = DEFINITION_FIELDS
        .iter()
        .filter_map(|f| state.remove(*f).map(|v| (f.to_string(), v)))
        .collect();
    Ok((
        serde_json::to_vec(&state).map_err(|e| json_error("a record", e))?,
        serde_json::to_vec(&definition).map_err(|e| json_error("a record", e))?,
    ))
}

/// The record whose two parts are `state` and `definition`.
pub(crate) fn join_record(state: &[u8], definition: Option<&[u8]>) -> Result<JobRecord, String> {
    let mut joined: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(state).map_err(|e| e.to_string())?;
    if let Some(d) = definition {
        let d: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(d).map_err(|e| e.to_string())?;
        joined.extend(d);
    }
    serde_json::from_value(serde_json::Value::Object(joined)).map_err(|e| e.to_string())
}

/// The largest chunk of staged object results (more than one result is never cut apart).
const CHUNK_BYTES: usize = 16 * 1024;

/// Object results a step reported, staged together: each result at `at`, or `after_us`
/// microseconds after it (the results of several reports share a chunk).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct StagedChunk {
    pub at: DateTime<Utc>,
    pub results: Vec<ObjectResult>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_us: Vec<u64>,
}

impl StagedChunk {
    /// When result `i` of the chunk was reported.
    pub fn at_of(&self, i: usize) -> DateTime<Utc> {
        match self.after_us.get(i) {
            Some(us) => self.at + chrono::Duration::microseconds(*us as i64),
            None => self.at,
        }
    }
}

/// A chunk as it is written (borrowing the results).
#[derive(serde::Serialize)]
struct ChunkOut<'a> {
    at: DateTime<Utc>,
    results: Vec<&'a ObjectResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    after_us: Vec<u64>,
}

/// About how many bytes a result takes as JSON (to cut chunks without serialising twice).
fn json_size(o: &ObjectResult) -> usize {
    o.name.len() + o.object_type.len() + o.error.as_ref().map_or(0, String::len) + 64
}

/// `reports`, the step's results `first_staged..` in order, as chunks of about
/// [`CHUNK_BYTES`] of JSON each (a result is never cut apart): (the step's number of the
/// chunk's first result, its bytes). Small chunks keep a rewrite small and stay inline in the
/// backend's pages.
pub(crate) fn chunk_results(
    first_staged: u64,
    reports: &[Reported<'_>],
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let mut chunks = vec![];
    let mut next = first_staged;
    let mut out: Option<(u64, ChunkOut<'_>, usize)> = None;
    let finish = |out: Option<(u64, ChunkOut<'_>, usize)>, chunks: &mut Vec<(u64, Vec<u8>)>| {
        if let Some((first, mut chunk, _)) = out {
            if chunk.after_us.iter().all(|us| *us == 0) {
                chunk.after_us.clear();
            }
            let json = serde_json::to_vec(&chunk).map_err(|e| json_error("object results", e))?;
            chunks.push((first, compress(&json)?));
        }
        Ok::<_, StoreError>(())
    };
    for report in reports {
        for o in report.objects {
            let size = json_size(o);
            if out
                .as_ref()
                .is_some_and(|(_, _, bytes)| bytes + size > CHUNK_BYTES)
            {
                finish(out.take(), &mut chunks)?;
            }
            let (_, chunk, bytes) = out.get_or_insert_with(|| {
                (
                    next,
                    ChunkOut {
                        at: report.at,
                        results: vec![],
                        after_us: vec![],
                    },
                    0,
                )
            });
            let after = (report.at - chunk.at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0) as u64;
            chunk.results.push(o);
            chunk.after_us.push(after);
            *bytes += size;
            next += 1;
        }
    }
    finish(out, &mut chunks)?;
    Ok(chunks)
}

/// Compress a chunk: results and events repeat their field names and much of their values,
/// so a chunk shrinks several fold, and every byte not written is one the store's log does
/// not carry.
pub(crate) fn compress(json: &[u8]) -> Result<Vec<u8>, StoreError> {
    zstd::stream::encode_all(json, 1)
        .map_err(|e| StoreError::unavailable(format!("compressing a chunk: {e}")))
}

/// The JSON of a chunk [`compress`] made.
pub(crate) fn decompress(what: &str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    zstd::stream::decode_all(bytes).map_err(|e| StoreError::corrupt(format!("{what}: {e}")))
}

/// The zstd frame magic number; a chunk starting otherwise is plain JSON.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

pub(crate) fn decode_chunk(bytes: &[u8]) -> Result<StagedChunk, StoreError> {
    if bytes.starts_with(&ZSTD_MAGIC) {
        let json = decompress("object results", bytes)?;
        return serde_json::from_slice(&json).map_err(|e| json_error("object results", e));
    }
    serde_json::from_slice(bytes).map_err(|e| json_error("object results", e))
}

/// Where a backend keeps visible segments and staged chunks.
pub(crate) trait ObjectSource {
    /// The segment starting at the largest position `<= index`, with that position.
    fn segment_at_or_before(
        &self,
        id: &str,
        index: u64,
    ) -> Result<Option<(u64, ObjectSegment)>, StoreError>;
    /// The staged chunk of step `step` starting at the largest number `<= staged`: its first
    /// number and the chunk.
    fn chunk_at_or_before(
        &self,
        id: &str,
        step: u32,
        staged: u64,
    ) -> Result<Option<(u64, StagedChunk)>, StoreError>;
}

/// Visible object results with position `>= from`, in order, at most `limit`.
pub(crate) fn read_objects(
    source: &impl ObjectSource,
    id: &str,
    from: u64,
    limit: usize,
) -> Result<Vec<StoredObject>, StoreError> {
    let mut out = Vec::with_capacity(limit.min(5000));
    let mut next = from;
    let mut chunk: Option<(u32, u64, StagedChunk)> = None;
    while out.len() < limit {
        let Some((first, seg)) = source.segment_at_or_before(id, next)? else {
            break;
        };
        if next >= first + seg.count {
            break; // past the last segment
        }
        let staged = seg.first_staged + (next - first);
        let in_chunk = chunk.as_ref().is_some_and(|(step, start, c)| {
            *step == seg.step && staged >= *start && staged < start + c.results.len() as u64
        });
        if !in_chunk {
            let missing =
                || StoreError::corrupt(format!("object result {staged} of job {id} is missing"));
            let (start, c) = source
                .chunk_at_or_before(id, seg.step, staged)?
                .ok_or_else(missing)?;
            if staged >= start + c.results.len() as u64 {
                return Err(missing());
            }
            chunk = Some((seg.step, start, c));
        }
        let (_, start, c) = chunk.as_ref().expect("loaded above");
        let i = (staged - start) as usize;
        out.push(StoredObject {
            index: next,
            step: seg.step,
            at: c.at_of(i),
            result: c.results[i].clone(),
        });
        next += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectStatus;

    fn result(i: usize) -> ObjectResult {
        ObjectResult {
            name: format!("session/{i:07}"),
            object_type: "key".into(),
            status: ObjectStatus::Success,
            error: None,
            duration_micros: i as u64,
        }
    }

    #[test]
    fn chunks_are_compressed_bounded_and_read_back_whole() {
        let results: Vec<ObjectResult> = (0..2000).map(result).collect();
        let at = Utc::now();
        let chunks = chunk_results(
            10,
            &[Reported {
                at,
                objects: &results,
            }],
        )
        .unwrap();
        assert!(chunks.len() > 1, "cut at {CHUNK_BYTES} bytes of JSON");
        assert_eq!(chunks[0].0, 10);
        let json_bytes: usize = results
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap().len())
            .sum();
        let stored: usize = chunks.iter().map(|(_, b)| b.len()).sum();
        assert!(stored * 3 < json_bytes, "{stored} of {json_bytes} bytes");
        let mut back = vec![];
        for (first, bytes) in &chunks {
            let chunk = decode_chunk(bytes).unwrap();
            assert_eq!(*first, 10 + back.len() as u64);
            assert_eq!(chunk.at, at);
            back.extend(chunk.results);
        }
        assert_eq!(back, results);
    }

    #[test]
    fn a_plain_json_chunk_written_before_compression_still_reads() {
        let plain = serde_json::to_vec(&StagedChunk {
            at: Utc::now(),
            results: vec![result(1)],
            after_us: vec![],
        })
        .unwrap();
        assert_eq!(decode_chunk(&plain).unwrap().results, vec![result(1)]);
        assert!(
            decode_chunk(b"\x28\xb5\x2f\xfdgarbage")
                .unwrap_err()
                .is_corruption()
        );
    }
}
