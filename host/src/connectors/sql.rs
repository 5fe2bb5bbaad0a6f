//! The SQL connector's host-side shape, independent of contract versions and of PostgreSQL:
//! a [`SqlDatabase`] opens one [`SqlTransaction`] per handler call.
//!
//! Invariant: a transaction opened for a read-only call can change nothing, and one opened
//! for any call ends with that call (committed only if the call succeeded).

use crate::stop::ForceStop;
use std::time::Instant;

/// A typed value, as a parameter or in a result row (see `sql-value` in the contract).
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// A JSON document's text.
    Json(String),
    /// Microseconds since 1970-01-01 UTC.
    Timestamp(i64),
}

/// Why a SQL operation failed; what the plugin sees as `sql-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    #[error("refused during a read-only call: {0}")]
    ReadOnly(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("database error {code}: {message}")]
    Database {
        code: String,
        message: String,
        detail: Option<String>,
    },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_name: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowPage {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<SqlValue>>,
    pub cursor: Option<String>,
}

/// The most rows one page may carry. Bounds host memory per call.
pub const MAX_PAGE_ROWS: usize = 10_000;

/// What bounds one call's transaction.
#[derive(Clone)]
pub struct CallBounds {
    /// Refuse every write.
    pub read_only: bool,
    /// No statement may run past it.
    pub deadline: Instant,
    /// Raised when the call is stopped by force: a statement running then is cancelled.
    pub force_stop: ForceStop,
}

/// A database a job may be granted.
pub trait SqlDatabase: Send + Sync {
    /// Begin the transaction of one handler call.
    fn begin(&self, bounds: CallBounds) -> Result<Box<dyn SqlTransaction>, SqlError>;
}

/// One call's transaction. Dropping it without [`SqlTransaction::finish`] rolls it back.
pub trait SqlTransaction: Send {
    fn execute(&mut self, statement: &str, params: &[SqlValue]) -> Result<u64, SqlError>;
    fn query(
        &mut self,
        statement: &str,
        params: &[SqlValue],
        page_size: usize,
    ) -> Result<RowPage, SqlError>;
    fn fetch(&mut self, cursor: &str, page_size: usize) -> Result<RowPage, SqlError>;
    fn batch(&mut self, script: &str) -> Result<(), SqlError>;
    /// Commit what was done so far and go on in a fresh transaction (a checkpoint).
    fn commit_and_continue(&mut self) -> Result<(), SqlError>;
    /// Why the transaction can commit nothing any more (a statement failed, or ended it).
    fn failed(&self) -> Option<String>;
    /// Commit (when `commit`) or roll back, and hand the connection back.
    fn finish(self: Box<Self>, commit: bool) -> Result<(), SqlError>;
}

/// Statements that would let a plugin end the host's transaction (and so escape "one
/// transaction per call") or, in a read-only call, change the session out of read-only mode:
/// refused before reaching the database. Matched on the first keyword, after comments; one
/// statement is all the extended protocol carries, so the first keyword is enough.
pub fn transaction_control_keyword(statement: &str, read_only: bool) -> Option<String> {
    const ALWAYS: [&str; 8] = [
        "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "PREPARE", "DISCARD",
    ];
    const READ_ONLY: [&str; 9] = [
        "SET",
        "RESET",
        "LISTEN",
        "NOTIFY",
        "UNLISTEN",
        "COPY",
        "CHECKPOINT",
        "LOAD",
        "CALL",
    ];
    let word = first_keyword(statement)?.to_ascii_uppercase();
    let refused =
        ALWAYS.contains(&word.as_str()) || (read_only && READ_ONLY.contains(&word.as_str()));
    refused.then_some(word)
}

/// The first word of `statement` that is not inside a comment. Block comments nest, as
/// PostgreSQL reads them; empty statements (`;`) before it are skipped.
pub(crate) fn first_keyword(statement: &str) -> Option<&str> {
    let mut rest = statement;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else if rest.starts_with("/*") {
            rest = after_block_comment(rest);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// What follows the (possibly nested) block comment `text` starts with; empty if unclosed.
fn after_block_comment(text: &str) -> &str {
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return &text[i..];
                }
            }
            _ => i += 1,
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_recognised_after_comments_and_case() {
        let refused = |s| transaction_control_keyword(s, true);
        assert_eq!(refused("commit").as_deref(), Some("COMMIT"));
        assert_eq!(
            refused("  -- sneaky\n /* x */ Set transaction read write").as_deref(),
            Some("SET")
        );
        assert_eq!(refused("SELECT 1"), None);
        assert_eq!(refused("insert into t values (1)"), None);
        assert_eq!(refused("/* unterminated"), None);
        assert_eq!(
            refused("/*/**/*/ COMMIT").as_deref(),
            Some("COMMIT"),
            "block comments nest"
        );
        assert_eq!(
            refused(";SET TRANSACTION READ WRITE").as_deref(),
            Some("SET")
        );
        assert_eq!(refused("/* a /* b */ c */ select 1"), None);
        assert_eq!(refused(""), None);
        assert_eq!(
            transaction_control_keyword("SET LOCAL lock_timeout = 1000", false),
            None,
            "a read-write call may tune its own transaction"
        );
        assert!(transaction_control_keyword("end", false).is_some());
    }
}
