//! The vault: values and whole files encrypted at rest with age (a passphrase, stretched by
//! scrypt, or X25519 identities).
//!
//! Two forms, both read wherever variables are (inventory, `-e @file`, `-e KEY=VALUE`):
//!
//! - one value: a string `vault:age:` followed by the age ciphertext in standard base64 on one
//!   line, so a file of variables stays diff-friendly (one changed value, one changed line) —
//!   Ansible's `encrypt_string`;
//! - a whole file: age's ASCII armor (`-----BEGIN AGE ENCRYPTED FILE-----`), decrypted before it
//!   is parsed.
//!
//! A value read from the vault is a secret: the caller registers it with the run's `Redactor`.

use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use base64::Engine as _;

/// What an encrypted value starts with.
pub const VALUE_PREFIX: &str = "vault:age:";
/// What an encrypted file starts with (age's armor).
pub const FILE_HEADER: &str = "-----BEGIN AGE ENCRYPTED FILE-----";
/// scrypt's work factor (2^15) for one value: a file of twenty values decrypts in about a second
/// instead of twenty. Whole files take age's default (about a second each).
const VALUE_WORK_FACTOR: u8 = 15;
/// The most work a passphrase-encrypted value may ask for (2^22: seconds and 4 GiB); more is
/// refused rather than risked on a file from elsewhere.
const MAX_WORK_FACTOR: u8 = 22;

/// The environment variables the command line reads the keys from.
pub const PASSWORD_FILE_ENV: &str = "PLAYBOOK_VAULT_PASSWORD_FILE";
pub const IDENTITY_ENV: &str = "PLAYBOOK_VAULT_IDENTITY";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VaultError(String);

impl VaultError {
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// The keys a run was given. Without any, reading an encrypted value is an error that says how
/// to give one.
#[derive(Default)]
pub struct Vault {
    passphrase: Option<(SecretString, PathBuf)>,
    identities: Vec<age::x25519::Identity>,
    identity_file: Option<PathBuf>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("password_file", &self.passphrase.as_ref().map(|(_, p)| p))
            .field("identity_file", &self.identity_file)
            .finish()
    }
}

impl Vault {
    /// Reads the keys: the first line of `password_file`, the `AGE-SECRET-KEY-1…` lines of
    /// `identity_file`. Neither file's text ever appears in an error.
    pub fn from_files(
        password_file: Option<&Path>,
        identity_file: Option<&Path>,
    ) -> Result<Vault, VaultError> {
        let mut vault = Vault::default();
        if let Some(p) = password_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| VaultError(format!("vault password file {}: {e}", p.display())))?;
            let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
            if line.is_empty() {
                return Err(VaultError(format!(
                    "vault password file {}: its first line is empty",
                    p.display()
                )));
            }
            vault.passphrase = Some((SecretString::from(line.to_string()), p.to_path_buf()));
        }
        if let Some(p) = identity_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| VaultError(format!("vault identity {}: {e}", p.display())))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let id = line.parse::<age::x25519::Identity>().map_err(|_| {
                    VaultError(format!(
                        "vault identity {}:{}: not an age identity (AGE-SECRET-KEY-1…)",
                        p.display(),
                        i + 1
                    ))
                })?;
                vault.identities.push(id);
            }
            if vault.identities.is_empty() {
                return Err(VaultError(format!(
                    "vault identity {}: holds no age identity (AGE-SECRET-KEY-1…)",
                    p.display()
                )));
            }
            vault.identity_file = Some(p.to_path_buf());
        }
        Ok(vault)
    }

    pub fn has_key(&self) -> bool {
        self.passphrase.is_some() || !self.identities.is_empty()
    }

    /// Where the keys came from, for messages.
    fn key_names(&self) -> String {
        let mut names = Vec::new();
        if let Some((_, p)) = &self.passphrase {
            names.push(format!("the password in {}", p.display()));
        }
        if let Some(p) = &self.identity_file {
            names.push(format!("the identity in {}", p.display()));
        }
        names.join(" or ")
    }

    fn no_key(what: &str) -> VaultError {
        VaultError(format!(
            "{what} is encrypted with the vault, but no vault key was given: use \
             --vault-password-file FILE or --vault-identity FILE (or set {PASSWORD_FILE_ENV} or \
             {IDENTITY_ENV})"
        ))
    }

    /// The first identity's recipient when there is one (X25519 is fast and has no passphrase
    /// to guess), else the passphrase with `log_n` as scrypt's work factor (None: age's default).
    fn encrypt(&self, plain: &[u8], log_n: Option<u8>, armor: bool) -> Result<Vec<u8>, VaultError> {
        let recipient: Box<dyn age::Recipient + Send> =
            match (&self.identities[..], &self.passphrase) {
                ([first, ..], _) => Box::new(first.to_public()),
                ([], Some((pass, _))) => {
                    let mut r = age::scrypt::Recipient::new(pass.clone());
                    if let Some(n) = log_n {
                        r.set_work_factor(n);
                    }
                    Box::new(r)
                }
                ([], None) => return Err(VaultError(
                    "no vault key was given: use --vault-password-file FILE or --vault-identity \
                     FILE (or set PLAYBOOK_VAULT_PASSWORD_FILE or PLAYBOOK_VAULT_IDENTITY)"
                        .into(),
                )),
            };
        let encryptor = age::Encryptor::with_recipients(std::iter::once(&*recipient as _))
            .map_err(|e| VaultError(format!("cannot encrypt: {e}")))?;
        let mut out = Vec::new();
        let io = |e: std::io::Error| VaultError(format!("cannot encrypt: {e}"));
        let format = if armor {
            age::armor::Format::AsciiArmor
        } else {
            age::armor::Format::Binary
        };
        let armored = age::armor::ArmoredWriter::wrap_output(&mut out, format).map_err(io)?;
        let mut w = encryptor.wrap_output(armored).map_err(io)?;
        std::io::Write::write_all(&mut w, plain).map_err(io)?;
        w.finish().and_then(|a| a.finish()).map_err(io)?;
        Ok(out)
    }

    /// One value as written in a file of variables: `vault:age:BASE64`.
    pub fn encrypt_value(&self, plain: &str) -> Result<String, VaultError> {
        let bytes = self.encrypt(plain.as_bytes(), Some(VALUE_WORK_FACTOR), false)?;
        Ok(format!(
            "{VALUE_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// A whole file, ASCII-armored.
    pub fn encrypt_file(&self, plain: &[u8]) -> Result<String, VaultError> {
        let bytes = self.encrypt(plain, None, true)?;
        Ok(String::from_utf8(bytes).expect("armor is ASCII"))
    }

    /// Decrypts age ciphertext (binary or armored). `what` names it in errors ("inventory.toml:
    /// 12:17: variable `db_password`").
    pub fn decrypt(&self, data: &[u8], what: &str) -> Result<Vec<u8>, VaultError> {
        if !self.has_key() {
            return Err(Vault::no_key(what));
        }
        let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(data))
            .map_err(|e| VaultError(format!("{what}: not vault ciphertext ({e})")))?;
        let mut ids: Vec<Box<dyn age::Identity>> = Vec::new();
        if let Some((pass, _)) = &self.passphrase {
            let mut id = age::scrypt::Identity::new(pass.clone());
            id.set_max_work_factor(MAX_WORK_FACTOR);
            ids.push(Box::new(id));
        }
        for id in &self.identities {
            ids.push(Box::new(id.clone()));
        }
        let wrong = || {
            VaultError(format!(
                "{what}: cannot decrypt it with {}: wrong vault password or identity",
                self.key_names()
            ))
        };
        let mut reader = decryptor
            .decrypt(ids.iter().map(|i| &**i as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys
                | age::DecryptError::DecryptionFailed
                | age::DecryptError::KeyDecryptionFailed
                | age::DecryptError::InvalidMac => wrong(),
                other => VaultError(format!("{what}: cannot decrypt: {other}")),
            })?;
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut plain).map_err(|_| wrong())?;
        Ok(plain)
    }

    /// Decrypts one `vault:age:BASE64` value.
    pub fn decrypt_value(&self, text: &str, what: &str) -> Result<String, VaultError> {
        let payload = text.strip_prefix(VALUE_PREFIX).unwrap_or(text).trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|_| VaultError(format!("{what}: the vault value is not valid base64")))?;
        let plain = self.decrypt(&bytes, what)?;
        String::from_utf8(plain)
            .map_err(|_| VaultError(format!("{what}: the vault value is not UTF-8 text")))
    }

    /// Decrypts every vault value inside `value` in place; `what` names the variable, `at` finds
    /// the position of a ciphertext in its file. Returns whether any value was encrypted.
    pub fn decrypt_tree(
        &self,
        value: &mut serde_json::Value,
        what: &str,
        at: &dyn Fn(&str) -> String,
    ) -> Result<bool, VaultError> {
        use serde_json::Value;
        Ok(match value {
            Value::String(s) if is_value(s) => {
                let plain = self.decrypt_value(s, &format!("{}{what}", at(s)))?;
                *s = plain;
                true
            }
            Value::Array(items) => {
                let mut any = false;
                for (i, v) in items.iter_mut().enumerate() {
                    any |= self.decrypt_tree(v, &format!("{what}[{i}]"), at)?;
                }
                any
            }
            Value::Object(m) => {
                let mut any = false;
                for (k, v) in m.iter_mut() {
                    any |= self.decrypt_tree(v, &format!("{what}.{k}"), at)?;
                }
                any
            }
            _ => false,
        })
    }
}

/// Whether a string is one encrypted value.
pub fn is_value(s: &str) -> bool {
    s.starts_with(VALUE_PREFIX)
}

/// Whether a file's text is an encrypted file.
pub fn is_file(text: &[u8]) -> bool {
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    text[start..].starts_with(FILE_HEADER.as_bytes())
}

/// A file's text, decrypted first when it is an encrypted file.
pub fn read_text(path: &Path, vault: &Vault) -> Result<String, std::io::Error> {
    let bytes = std::fs::read(path)?;
    let bytes = if is_file(&bytes) {
        vault
            .decrypt(&bytes, &path.display().to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.0))?
    } else {
        bytes
    };
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault_with(pass: &str) -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, format!("{pass}\nignored second line\n")).unwrap();
        let v = Vault::from_files(Some(&p), None).unwrap();
        (dir, v)
    }

    #[test]
    fn a_value_round_trips_on_one_line_and_a_wrong_password_is_named() {
        let (_d, v) = vault_with("correct horse");
        let enc = v.encrypt_value("s3cret-value").unwrap();
        assert!(
            enc.starts_with(VALUE_PREFIX) && !enc.contains('\n'),
            "{enc}"
        );
        assert!(!enc.contains("s3cret"));
        assert_eq!(v.decrypt_value(&enc, "x").unwrap(), "s3cret-value");
        let (_d2, wrong) = vault_with("battery staple");
        let e = wrong
            .decrypt_value(&enc, "inv.toml:3:5: variable `pw`")
            .unwrap_err();
        assert!(
            e.message()
                .starts_with("inv.toml:3:5: variable `pw`: cannot decrypt it with the password in"),
            "{e}"
        );
        assert!(e.message().contains("wrong vault password"), "{e}");
        let none = Vault::default()
            .decrypt_value(&enc, "variable `pw`")
            .unwrap_err();
        assert!(none.message().contains("no vault key was given"), "{none}");
    }

    #[test]
    fn identities_encrypt_to_themselves_and_files_are_armored() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let p = dir.path().join("key.txt");
        use age::secrecy::ExposeSecret;
        std::fs::write(&p, format!("# a key\n{}\n", id.to_string().expose_secret())).unwrap();
        let v = Vault::from_files(None, Some(&p)).unwrap();
        let file = v.encrypt_file(b"pw = \"x\"\n").unwrap();
        assert!(is_file(file.as_bytes()), "{file}");
        assert_eq!(v.decrypt(file.as_bytes(), "f").unwrap(), b"pw = \"x\"\n");
        std::fs::write(&p, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
        let e = Vault::from_files(None, Some(&p)).unwrap_err();
        assert!(
            e.message()
                .ends_with("key.txt:1: not an age identity (AGE-SECRET-KEY-1…)"),
            "{e}"
        );
        assert!(!e.message().contains("NOTAKEY"));
    }
}
