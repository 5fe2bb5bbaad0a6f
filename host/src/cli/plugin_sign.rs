//! `plover plugin keygen` and `plover plugin sign`: the publisher's side of signed plugins
//! (`runtime::signing` is the host's). Local files only; no server involved.

use crate::runtime::signing;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Write a new private key to `out` (readable by its owner only) and print its public key.
pub fn keygen(out: &Path) -> ExitCode {
    let result = (|| {
        if out.exists() {
            return Err(format!("{} exists; not overwriting a key", out.display()));
        }
        let (pem, public) = signing::generate_key()?;
        write_private(out, &pem).map_err(|e| format!("{}: {e}", out.display()))?;
        Ok(public)
    })();
    match result {
        Ok(public) => {
            println!("wrote the private key to {}; keep it secret", out.display());
            println!("public key (for trusted_keys): {public}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plover plugin keygen: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// The signature file of `file`: `out`, or `FILE.sig` beside it.
pub fn signature_path(file: &Path, out: Option<PathBuf>) -> PathBuf {
    out.unwrap_or_else(|| {
        let mut p = file.as_os_str().to_owned();
        p.push(".sig");
        PathBuf::from(p)
    })
}

/// Sign `file` with the private key in `key`, writing `FILE.sig` (or `out`).
pub fn sign(file: &Path, key: &Path, out: Option<PathBuf>) -> ExitCode {
    let out = signature_path(file, out);
    let result = (|| {
        let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(format!("{} is not a WebAssembly component", file.display()));
        }
        let pem = std::fs::read_to_string(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let sig = signing::sign(&bytes, &pem).map_err(|e| format!("{}: {e}", key.display()))?;
        let text = serde_json::to_string_pretty(&sig).expect("a signature serialises") + "\n";
        std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
        Ok(sig)
    })();
    match result {
        Ok(sig) => {
            println!(
                "signed {} (sha256 {}) with key {}; wrote {}",
                file.display(),
                sig.sha256,
                sig.public_key,
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plover plugin sign: {e}");
            ExitCode::from(2)
        }
    }
}
