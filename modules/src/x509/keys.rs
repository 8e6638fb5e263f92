//! Keys, serial numbers and time, for the CA and the certificates it signs.

use engine::secret::Redactor;
use engine::ModuleError;

/// Registers a private key's text (whole, and each line of its body) as a secret.
pub(super) fn register_key(secrets: &Redactor, pem: &str) {
    secrets.add(pem);
    secrets.add(pem.trim());
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        secrets.add(line.trim());
    }
}

/// Whether a PEM key is the private key of a PEM certificate.
pub(super) fn pem_pair_matches(cert_pem: &str, key_pem: &str) -> bool {
    let Some(key) = read_key(key_pem) else {
        return false;
    };
    match x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) {
        Ok((_, pem)) => pem
            .parse_x509()
            .is_ok_and(|c| c.public_key().raw == spki_of(&key).as_slice()),
        Err(_) => false,
    }
}

/// A key pair from PEM, if rcgen can read it.
pub(super) fn read_key(pem: &str) -> Option<rcgen::KeyPair> {
    rcgen::KeyPair::from_pem(pem).ok()
}

pub(super) fn spki_of(key: &rcgen::KeyPair) -> Vec<u8> {
    use rcgen::PublicKeyData;
    key.subject_public_key_info()
}

/// A fresh positive serial number, 16 bytes.
pub(super) fn serial() -> rcgen::SerialNumber {
    use sha2::Digest;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut h = sha2::Sha256::new();
    h.update(now.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    // A fresh key's public part adds entropy from the system's random source.
    if let Ok(k) = rcgen::KeyPair::generate() {
        h.update(spki_of(&k));
    }
    let mut bytes = h.finalize()[..16].to_vec();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    rcgen::SerialNumber::from_slice(&bytes)
}

pub(super) fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

pub(super) fn failed(what: impl std::fmt::Display) -> ModuleError {
    ModuleError::Failed(what.to_string())
}

