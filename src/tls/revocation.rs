//! Revoked peer certificates: a member removed by an operator can no longer open a
//! connection to any member, in either direction, with the certificate it had. The deny-list
//! holds certificate fingerprints (not node ids), so a removed id can come back with a
//! certificate issued anew, and every member fills it from the removals it knows, which
//! are gossiped and kept in the durable log.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// What identifies one certificate: the BLAKE3 hash of its DER encoding.
pub type Fingerprint = [u8; 32];

/// The fingerprint of `cert`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> Fingerprint {
    *blake3::hash(cert.as_ref()).as_bytes()
}

/// The certificates no peer may use any more; shared by the node's TLS verifiers and
/// filled by its membership. Cheap to clone (clones share the list).
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    revoked: Arc<RwLock<HashSet<Fingerprint>>>,
    /// Where new revocations are appended, once [`Revocations::keep_in`] named a file.
    file: Arc<Mutex<Option<PathBuf>>>,
}

impl Revocations {
    /// Refuses `cert` from now on; whether it is new to the list. A new one is also appended
    /// to the file of [`Revocations::keep_in`], if any (a failure to write is logged: the
    /// revocation holds in memory, and gossip and the durable log bring it back).
    pub fn revoke(&self, cert: Fingerprint) -> bool {
        let new = self
            .revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cert);
        if new {
            let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(path) = file.as_ref()
                && let Err(e) = append(path, &cert)
            {
                tracing::warn!(file = %path.display(), "cannot record a revoked certificate: {e}");
            }
        }
        new
    }

    /// Loads the revocations kept in `path` (one hexadecimal fingerprint per line; a missing
    /// file is none) and appends every later one there, so that they hold across restarts
    /// whatever the node's durability. Returns how many it loaded.
    pub fn keep_in(&self, path: &Path) -> std::io::Result<usize> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut loaded = 0;
        {
            let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                match parse_hex(line) {
                    Some(cert) => {
                        revoked.insert(cert);
                        loaded += 1;
                    }
                    None => tracing::warn!(
                        file = %path.display(),
                        "skipped a line that is not a certificate fingerprint"
                    ),
                }
            }
        }
        let known: Vec<Fingerprint> = self
            .revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = Some(path.to_path_buf());
        // Revocations learned before the file was named are written now.
        let written: HashSet<Fingerprint> =
            text.lines().filter_map(|l| parse_hex(l.trim())).collect();
        for cert in known.iter().filter(|c| !written.contains(*c)) {
            append(path, cert)?;
        }
        Ok(loaded)
    }

    /// Whether `cert` is refused.
    pub fn is_revoked(&self, cert: &CertificateDer<'_>) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&fingerprint(cert))
    }

    /// How many certificates are refused.
    pub fn len(&self) -> usize {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The error a handshake with a revoked certificate fails with.
    pub fn error() -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Revoked)
    }
}

fn append(path: &Path, cert: &Fingerprint) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let hex: String = cert.iter().map(|b| format!("{b:02x}")).collect();
    writeln!(file, "{hex}")?;
    file.sync_all()
}

fn parse_hex(line: &str) -> Option<Fingerprint> {
    if line.len() != 64 || !line.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&line[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The stock client verifier, refusing revoked certificates first.
#[derive(Debug)]
pub struct RevokingClientVerifier {
    /// The verifier that checks the chain to the cluster CA.
    pub inner: Arc<dyn ClientCertVerifier>,
    /// The certificates refused.
    pub revoked: Revocations,
}

impl ClientCertVerifier for RevokingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.revoked.is_revoked(end_entity) {
            return Err(Revocations::error());
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_kept_in_a_file_come_back() {
        let dir = std::env::temp_dir().join(format!("qkv-revoked-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("revoked");
        let _ = std::fs::remove_file(&path);
        let first = Revocations::default();
        assert!(first.revoke([1; 32]));
        assert_eq!(first.keep_in(&path).unwrap(), 0);
        assert!(first.revoke([2; 32]));
        assert!(!first.revoke([2; 32]));
        let again = Revocations::default();
        assert_eq!(again.keep_in(&path).unwrap(), 2);
        assert_eq!(again.len(), 2);
        std::fs::remove_dir_all(&dir).ok();
    }
}
