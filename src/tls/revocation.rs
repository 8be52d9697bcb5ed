//! Revoked peer certificates: a member removed by an operator can no longer open a
//! connection to any member, in either direction, with the certificate it had. The deny-list
//! holds certificate fingerprints (not node ids), so a removed id can come back with a
//! certificate issued anew, and every member fills it from the removals it knows, which
//! are gossiped and kept in the durable log.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

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
}

impl Revocations {
    /// Refuses `cert` from now on; whether it is new to the list.
    pub fn revoke(&self, cert: Fingerprint) -> bool {
        self.revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cert)
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
