//! Signed plugins: who vouches for a component, and whether this host trusts them.
//!
//! A signature is a small JSON file beside the component (`handler.wasm.sig`), made by
//! `plover plugin sign` with an ed25519 key (a PKCS#8 PEM file, as `plover plugin keygen` or
//! `openssl genpkey -algorithm ed25519` writes it). It signs the component's sha256, prefixed
//! with [`SIGNED_PREFIX`] so the key signs nothing else by accident. The operator lists the
//! public keys it trusts by name (`trusted_keys`); with `require_signed`, every plugin,
//! uploaded or from a directory, must carry a valid signature by one of them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The only signature format there is so far.
pub const FORMAT: &str = "plover-ed25519-v1";
/// What is signed: this, then the component's sha256 in hex.
pub const SIGNED_PREFIX: &str = "plover plugin signature v1\n";

/// A plugin's signature, as stored beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginSignature {
    pub format: String,
    /// The signer's ed25519 public key, base64 of its 32 bytes.
    pub public_key: String,
    /// The sha256 of the signed component, in hex.
    pub sha256: String,
    /// base64 of the 64-byte signature.
    pub signature: String,
}

/// Which signers this host trusts, and whether it runs unsigned plugins.
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    pub require_signed: bool,
    /// Trusted public keys by the name operators gave them.
    keys: Vec<(String, VerifyingKey)>,
}

/// Why a signature is not good enough.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefusal {
    #[error("the plugin is not signed, and this host requires signed plugins (require_signed)")]
    Unsigned,
    #[error("the signature is in an unknown format {0:?} (expected {FORMAT})")]
    UnknownFormat(String),
    #[error(
        "the signature is for other bytes (sha256 {signed}, the plugin's is {actual}): the plugin changed after it was signed"
    )]
    OtherBytes { signed: String, actual: String },
    #[error(
        "signed by a key this host does not trust (public key {0}); add it to trusted_keys to run it"
    )]
    UntrustedKey(String),
    #[error("the signature is not valid for this plugin and key")]
    Invalid,
    #[error("the signature file cannot be read: {0}")]
    Unreadable(String),
}

/// The signature file of the component at `path` (`<path>.sig`), if there is one.
pub fn read_beside(path: &std::path::Path) -> Result<Option<PluginSignature>, SignatureRefusal> {
    let mut sig_path = path.as_os_str().to_owned();
    sig_path.push(".sig");
    let sig_path = std::path::PathBuf::from(sig_path);
    match std::fs::read_to_string(&sig_path) {
        Ok(text) => parse(&text)
            .map(Some)
            .map_err(|e| SignatureRefusal::Unreadable(format!("{}: {e}", sig_path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SignatureRefusal::Unreadable(format!(
            "{}: {e}",
            sig_path.display()
        ))),
    }
}

/// A signature file's text.
pub fn parse(text: &str) -> Result<PluginSignature, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

impl TrustPolicy {
    /// A policy over `keys` (name → public key, as base64 of 32 bytes or a PEM public key).
    pub fn new(require_signed: bool, keys: &BTreeMap<String, String>) -> Result<Self, String> {
        let keys = keys
            .iter()
            .map(|(name, text)| {
                public_key(text)
                    .map(|k| (name.clone(), k))
                    .map_err(|e| format!("trusted_keys.{name}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustPolicy {
            require_signed,
            keys,
        })
    }

    /// Whether a plugin whose bytes hash to `sha256` may load with `signature`: the name of the
    /// trusted key that signed it (`None` for an unsigned plugin this host accepts). A
    /// signature that is present is always checked, even when signatures are not required.
    pub fn check(
        &self,
        sha256: &str,
        signature: Option<&PluginSignature>,
    ) -> Result<Option<String>, SignatureRefusal> {
        let Some(sig) = signature else {
            return if self.require_signed {
                Err(SignatureRefusal::Unsigned)
            } else {
                Ok(None)
            };
        };
        if sig.format != FORMAT {
            return Err(SignatureRefusal::UnknownFormat(sig.format.clone()));
        }
        if !sig.sha256.eq_ignore_ascii_case(sha256) {
            return Err(SignatureRefusal::OtherBytes {
                signed: sig.sha256.clone(),
                actual: sha256.to_string(),
            });
        }
        let key = public_key(&sig.public_key).map_err(|_| SignatureRefusal::Invalid)?;
        let Some((name, _)) = self.keys.iter().find(|(_, k)| *k == key) else {
            return Err(SignatureRefusal::UntrustedKey(sig.public_key.clone()));
        };
        let bytes: [u8; 64] = STANDARD
            .decode(sig.signature.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureRefusal::Invalid)?;
        key.verify_strict(&signed_message(sha256), &Signature::from_bytes(&bytes))
            .map_err(|_| SignatureRefusal::Invalid)?;
        Ok(Some(name.clone()))
    }
}

fn signed_message(sha256: &str) -> Vec<u8> {
    format!("{SIGNED_PREFIX}{}", sha256.to_ascii_lowercase()).into_bytes()
}

/// A public key given as base64 of its 32 bytes, or as a PEM `PUBLIC KEY`.
pub fn public_key(text: &str) -> Result<VerifyingKey, String> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text)
            .map_err(|e| format!("not an ed25519 public key: {e}"));
    }
    let bytes: [u8; 32] = STANDARD
        .decode(text.as_bytes())
        .map_err(|e| format!("not base64: {e}"))?
        .try_into()
        .map_err(|_| "an ed25519 public key is 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 public key: {e}"))
}

/// A new signing key as a PKCS#8 PEM file's text, and its public key in base64.
pub fn generate_key() -> Result<(String, String), String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| format!("encoding the key: {e}"))?;
    Ok((
        pem.to_string(),
        STANDARD.encode(key.verifying_key().as_bytes()),
    ))
}

/// Sign a component (`bytes`) with the PKCS#8 PEM private key `key_pem`.
pub fn sign(bytes: &[u8], key_pem: &str) -> Result<PluginSignature, String> {
    let key = SigningKey::from_pkcs8_pem(key_pem.trim())
        .map_err(|e| format!("not an ed25519 private key in PKCS#8 PEM: {e}"))?;
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    let signature = key.sign(&signed_message(&sha256));
    Ok(PluginSignature {
        format: FORMAT.into(),
        public_key: STANDARD.encode(key.verifying_key().as_bytes()),
        sha256,
        signature: STANDARD.encode(signature.to_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
    }

    fn trusting(name: &str, public: &str, require: bool) -> TrustPolicy {
        TrustPolicy::new(require, &[(name.to_string(), public.to_string())].into()).unwrap()
    }

    #[test]
    fn a_signature_by_a_trusted_key_names_the_signer_and_anything_else_is_refused() {
        let (pem, public) = generate_key().unwrap();
        let (other_pem, _) = generate_key().unwrap();
        let plugin = b"\0asm component bytes".to_vec();
        let sig = sign(&plugin, &pem).unwrap();
        let policy = trusting("partner-a", &public, true);
        assert_eq!(
            policy.check(&sha(&plugin), Some(&sig)),
            Ok(Some("partner-a".into()))
        );

        assert_eq!(
            policy.check(&sha(&plugin), None),
            Err(SignatureRefusal::Unsigned)
        );
        let foreign = sign(&plugin, &other_pem).unwrap();
        assert!(matches!(
            policy.check(&sha(&plugin), Some(&foreign)),
            Err(SignatureRefusal::UntrustedKey(_))
        ));
        let changed = b"\0asm other bytes".to_vec();
        assert!(matches!(
            policy.check(&sha(&changed), Some(&sig)),
            Err(SignatureRefusal::OtherBytes { .. })
        ));
        // The hash in the file edited to match other bytes: the signature no longer holds.
        let forged = PluginSignature {
            sha256: sha(&changed),
            ..sig.clone()
        };
        assert_eq!(
            policy.check(&sha(&changed), Some(&forged)),
            Err(SignatureRefusal::Invalid)
        );
    }

    #[test]
    fn without_require_signed_unsigned_plugins_load_but_a_bad_signature_does_not() {
        let (pem, public) = generate_key().unwrap();
        let policy = trusting("a", &public, false);
        assert_eq!(policy.check("ab", None), Ok(None));
        let sig = sign(b"x", &pem).unwrap();
        assert!(policy.check(&sha(b"y"), Some(&sig)).is_err());
    }

    #[test]
    fn keys_are_read_as_base64_or_pem_and_bad_ones_are_named() {
        let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----";
        assert!(public_key(pem).is_ok());
        let err = TrustPolicy::new(false, &[("x".to_string(), "AAAA".to_string())].into())
            .err()
            .unwrap();
        assert!(
            err.starts_with("trusted_keys.x: an ed25519 public key is 32 bytes"),
            "{err}"
        );
        assert!(sign(b"x", "not a key").is_err());
    }
}
