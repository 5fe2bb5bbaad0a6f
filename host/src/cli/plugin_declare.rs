//! `plover plugin declare`: write the bindings a built component expects into it (any
//! language's: a Python component from componentize-py, a Rust one), before signing it.

use crate::runtime::declared::{self, BindingAccess, BindingKind, DeclaredBinding};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Parse `NAME=KIND:ACCESS` (KIND kv, sql or http; ACCESS read or read-write), with an
/// optional `:DESCRIPTION` after it.
pub fn parse_binding(text: &str) -> Result<DeclaredBinding, String> {
    let bad = || {
        format!(
            "'{text}' is not NAME=KIND:ACCESS[:DESCRIPTION] (KIND kv, sql or http; ACCESS read or read-write)"
        )
    };
    let (name, rest) = text.split_once('=').ok_or_else(bad)?;
    let mut parts = rest.splitn(3, ':');
    let kind = match parts.next() {
        Some("kv") => BindingKind::Kv,
        Some("sql") => BindingKind::Sql,
        Some("http") => BindingKind::Http,
        _ => return Err(bad()),
    };
    let access = match parts.next() {
        Some("read") => BindingAccess::Read,
        Some("read-write") => BindingAccess::ReadWrite,
        _ => return Err(bad()),
    };
    Ok(DeclaredBinding {
        name: name.to_string(),
        kind,
        access,
        description: parts.next().map(str::to_string),
    })
}

/// Declare the bindings listed in `from` (a JSON file), then `bindings`, in the component
/// `file`, writing it to `out` (default: in place).
pub fn declare(
    file: &Path,
    from: Option<&Path>,
    bindings: &[String],
    out: Option<PathBuf>,
) -> ExitCode {
    let result = (|| {
        let mut listed = match from {
            Some(path) => {
                let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                declared::parse(&data).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => vec![],
        };
        for b in bindings {
            listed.push(parse_binding(b)?);
        }
        let bindings = listed;
        let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let declared =
            declared::declare(&bytes, &bindings).map_err(|e| format!("{}: {e}", file.display()))?;
        let out = out.unwrap_or_else(|| file.to_path_buf());
        // Written beside, then renamed: a failure never leaves half a component.
        let partial = out.with_extension("wasm.partial");
        std::fs::write(&partial, &declared)
            .and_then(|()| std::fs::rename(&partial, &out))
            .map_err(|e| format!("{}: {e}", out.display()))?;
        Ok::<_, String>((out, bindings.len()))
    })();
    match result {
        Ok((out, n)) => {
            println!(
                "declared {n} binding{} in {} (sign it after this: its sha256 changed)",
                if n == 1 { "" } else { "s" },
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plover plugin declare: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bindings_and_names_the_shape_when_it_cannot() {
        let b = parse_binding("source=kv:read:the sessions to copy").unwrap();
        assert_eq!(
            (b.name.as_str(), b.kind, b.access),
            ("source", BindingKind::Kv, BindingAccess::Read)
        );
        assert_eq!(b.description.as_deref(), Some("the sessions to copy"));
        assert!(
            parse_binding("db=sql:read-write")
                .unwrap()
                .description
                .is_none()
        );
        for bad in ["source", "source=kv", "source=ftp:read", "source=kv:write"] {
            assert!(
                parse_binding(bad).unwrap_err().contains("NAME=KIND:ACCESS"),
                "{bad}"
            );
        }
    }
}
