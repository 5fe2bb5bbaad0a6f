//! The bindings a plugin declares: which connections it expects (name, kind, read or
//! read-write), so operators see them before they grant anything, a job granting a binding
//! the plugin does not declare is refused, and a binding declared read-only is read-only.
//!
//! Contract 0.1 has no field for them, so they travel in the component as a custom section
//! named [`SECTION`] holding a JSON array: `[{"name": "source", "kind": "kv", "access":
//! "read"}, …]`. The Rust SDK's `declare_bindings!` puts it in the core module (it survives
//! componentizing); `plover plugin declare` adds it to any built component (Python ones
//! included). Custom sections are data, never code: a declaration changes nothing a plugin can
//! do except to narrow it. A plugin without one is undeclared and granted as before.

use crate::connectors::Grants;
use serde::{Deserialize, Serialize};
use wasmparser::{Parser, Payload};

/// The custom section's name.
pub const SECTION: &str = "plover:bindings";
/// Largest declaration accepted, in bytes, and most bindings in it.
const MAX_SECTION_BYTES: usize = 16 * 1024;
const MAX_BINDINGS: usize = 64;

/// What kind of connection a binding expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BindingKind {
    /// A key-value bucket (sled, Redis, memory).
    Kv,
    /// A SQL database (PostgreSQL).
    Sql,
    /// Outgoing HTTP.
    Http,
}

impl BindingKind {
    /// The connector kind's name as the host's refusals spell it.
    pub fn connector_name(self) -> &'static str {
        match self {
            BindingKind::Kv => "key-value",
            BindingKind::Sql => "SQL",
            BindingKind::Http => "HTTP",
        }
    }
}

/// Whether the plugin writes through a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BindingAccess {
    /// Only reads: the host refuses writes through it (HTTP: only GET and HEAD; SQL: a
    /// read-only transaction).
    Read,
    /// `read_write` is what the Rust SDK's `declare_bindings!` writes (an identifier).
    #[serde(alias = "read_write")]
    ReadWrite,
}

/// One binding a plugin declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclaredBinding {
    /// The binding name the plugin opens (`Bucket::open("source")`).
    pub name: String,
    pub kind: BindingKind,
    pub access: BindingAccess,
    /// What the plugin uses it for, for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The declaration in `component`, if it has one: `Ok(None)` for an undeclared plugin, an
/// error naming what is wrong for one that is malformed (which is refused, not ignored: an
/// author who declared bindings expects them enforced). Looks at the component's own custom
/// sections and those of the core modules inside it.
pub fn read_declared(component: &[u8]) -> Result<Option<Vec<DeclaredBinding>>, String> {
    // One at the top level (`plover plugin declare`) wins over one inside a core module
    // (the SDK's macro): it was added later, on purpose.
    let (mut top, mut nested): (Option<&[u8]>, Option<&[u8]>) = (None, None);
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(component) {
        // A malformed component fails its compile with a better message.
        let Ok(payload) = payload else { break };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(section) if section.name() == SECTION => {
                let slot = if depth == 0 { &mut top } else { &mut nested };
                if slot.is_some() {
                    return Err(format!(
                        "the component has more than one '{SECTION}' section"
                    ));
                }
                *slot = Some(section.data());
            }
            _ => {}
        }
    }
    match top.or(nested) {
        Some(data) => parse(data).map(Some),
        None => Ok(None),
    }
}

/// Check a declaration's JSON: what `plover plugin declare` writes and the host reads.
pub fn parse(data: &[u8]) -> Result<Vec<DeclaredBinding>, String> {
    if data.len() > MAX_SECTION_BYTES {
        return Err(format!(
            "the '{SECTION}' section is {} bytes; at most {MAX_SECTION_BYTES} are allowed",
            data.len()
        ));
    }
    let bindings: Vec<DeclaredBinding> = serde_json::from_slice(data)
        .map_err(|e| format!("the '{SECTION}' section is not a list of bindings: {e}"))?;
    if bindings.len() > MAX_BINDINGS {
        return Err(format!(
            "{} bindings declared; at most {MAX_BINDINGS} are allowed",
            bindings.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for b in &bindings {
        let name_ok = !b.name.is_empty()
            && b.name.len() <= 64
            && b.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(format!(
                "declared binding name '{}' must be 1-64 letters, digits, '-', '_' or '.'",
                crate::model::truncated(&b.name, 80)
            ));
        }
        if !seen.insert(b.name.as_str()) {
            return Err(format!("binding '{}' is declared twice", b.name));
        }
        if b.description.as_ref().is_some_and(|d| d.len() > 500) {
            return Err(format!(
                "the description of binding '{}' is over 500 bytes",
                b.name
            ));
        }
    }
    Ok(bindings)
}

/// `grants` as a plugin declaring `declared` may have them: every binding declared and of the
/// declared kind, those declared `read` read-only. Unchanged for an undeclared plugin.
pub fn narrow(
    plugin: &str,
    declared: Option<&[DeclaredBinding]>,
    grants: Grants,
) -> Result<Grants, String> {
    let Some(declared) = declared else {
        return Ok(grants);
    };
    let mut narrowed = grants.clone();
    for binding in grants.binding_names() {
        let Some(d) = declared.iter().find(|d| d.name == binding) else {
            return Err(format!(
                "{plugin} does not declare the binding '{binding}' (it declares: {})",
                list(declared)
            ));
        };
        let granted = grants.connector(&binding).map(|c| c.kind()).unwrap_or("?");
        if d.kind.connector_name() != granted {
            return Err(format!(
                "{plugin} declares '{binding}' a {} connection, but it is granted a {granted} one",
                d.kind.connector_name()
            ));
        }
        if d.access == BindingAccess::Read {
            narrowed = narrowed.read_only(binding);
        }
    }
    Ok(narrowed)
}

/// `source (key-value, read), target (key-value, read-write)`, or `none`.
pub fn list(declared: &[DeclaredBinding]) -> String {
    if declared.is_empty() {
        return "none".into();
    }
    declared
        .iter()
        .map(|d| {
            let access = match d.access {
                BindingAccess::Read => "read",
                BindingAccess::ReadWrite => "read-write",
            };
            format!("{} ({}, {access})", d.name, d.kind.connector_name())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `component` with `bindings` declared in it (any earlier declaration at its top level is
/// replaced). The bytes change, and so does the sha256: declare before signing.
pub fn declare(component: &[u8], bindings: &[DeclaredBinding]) -> Result<Vec<u8>, String> {
    let data = serde_json::to_vec(bindings).expect("bindings serialise");
    parse(&data)?;
    let mut out = Vec::with_capacity(component.len() + data.len() + 32);
    let mut parser = Parser::new(0);
    let mut rest = component;
    // Copy every top-level section but an earlier declaration, then append the new one.
    loop {
        let (consumed, payload) = match parser
            .parse(rest, true)
            .map_err(|e| format!("not a WebAssembly component: {e}"))?
        {
            wasmparser::Chunk::Parsed { consumed, payload } => (consumed, payload),
            wasmparser::Chunk::NeedMoreData(_) => return Err("the component is cut short".into()),
        };
        let (header, after) = rest.split_at(consumed);
        rest = after;
        match payload {
            Payload::Version { encoding, .. } if encoding != wasmparser::Encoding::Component => {
                return Err("a core module, not a component".into());
            }
            Payload::End(_) => break,
            Payload::CustomSection(s) if s.name() == SECTION => continue,
            // A nested module or component: the parser has counted its bytes but left them
            // to us; they are copied whole.
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                let len = unchecked_range.end - unchecked_range.start;
                if len > rest.len() {
                    return Err("the component is cut short".into());
                }
                out.extend_from_slice(header);
                let (nested, after) = rest.split_at(len);
                out.extend_from_slice(nested);
                rest = after;
                continue;
            }
            _ => {}
        }
        out.extend_from_slice(header);
    }
    let section = wasm_encoder::CustomSection {
        name: SECTION.into(),
        data: data.into(),
    };
    out.push(0); // a custom section's id, in components as in core modules
    wasm_encoder::Encode::encode(&section, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_it_could_not_enforce_and_round_trips_what_it_can() {
        assert!(parse(b"{}").is_err());
        assert!(parse(br#"[{"name":"a b","kind":"kv","access":"read"}]"#).is_err());
        assert!(
            parse(br#"[{"name":"a","kind":"kv","access":"read"},{"name":"a","kind":"sql","access":"read"}]"#)
                .unwrap_err()
                .contains("twice")
        );
        assert!(parse(br#"[{"name":"a","kind":"ftp","access":"read"}]"#).is_err());
        let ok = parse(br#"[{"name":"source","kind":"kv","access":"read"}]"#).unwrap();
        assert_eq!(ok[0].access, BindingAccess::Read);
    }
}
