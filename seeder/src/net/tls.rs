/*!
TLS for QUIC between seeder nodes: every node has an ed25519 identity and presents a
self-signed certificate whose public key IS that identity. There is no certificate authority:
a dialer that knows the node id it wants (a partner seeder, an mDNS answer) pins it; otherwise
it learns the id. Both sides authenticate (the listener requires a client certificate), and
the TLS 1.3 handshake signature is checked with the certificate's key, so a peer can't claim
an id whose key it doesn't hold.

Cipher suites: ChaCha20-Poly1305 goes first on CPUs without AES instructions (the Lime2's
Cortex-A7), where it is several times faster than AES-GCM in software; elsewhere rustls's
default order stays. QUIC also needs TLS_AES_128_GCM_SHA256 present (for its initial
packets), so no suite is removed.
*/

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::identity::{NodeId, NodeIdentity};
use super::NetError;

/// The name dialers put in the TLS handshake; ignored by the verifiers (ids are pinned
/// instead), but TLS needs one.
pub const SERVER_NAME: &str = "seeder";

/// PKCS#8 v1 wrapping of an Ed25519 private key (RFC 8410): this prefix, then the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The AlgorithmIdentifier of Ed25519 (OID 1.3.101.112, no parameters), DER content bytes.
const ED25519_ALG_ID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Whether this CPU has AES instructions (then AES-GCM stays first).
pub fn cpu_has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        // 32-bit ARM boards like the Lime2 have none.
        false
    }
}

/// ring's provider, with ChaCha20-Poly1305 first where AES is slow.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    if !cpu_has_aes() {
        p.cipher_suites
            .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    }
    Arc::new(p)
}

/// The node's certificate and key for rustls.
pub fn certificate(
    identity: &NodeIdentity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), NetError> {
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(identity.secret_bytes().as_slice());
    let der = PrivatePkcs8KeyDer::from(pkcs8);
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
        .map_err(|e| NetError::Tls(format!("node key: {e}")))?;
    let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
        .map_err(|e| NetError::Tls(format!("certificate parameters: {e}")))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| NetError::Tls(format!("self-signing: {e}")))?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(der)))
}

/// One DER element: (tag, content, rest). Lengths up to 4 bytes; anything else is refused.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *input.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    if end > input.len() {
        return None;
    }
    Some((tag, &input[header..end], &input[end..]))
}

/// The Ed25519 public key in a certificate's SubjectPublicKeyInfo, read by walking the
/// TBSCertificate's fields in order (never by searching, so no other field can pose as it).
pub fn ed25519_key_of(cert: &[u8]) -> Option<[u8; 32]> {
    let (0x30, certificate, rest) = tlv(cert)? else {
        return None;
    };
    if !rest.is_empty() {
        return None;
    }
    let (0x30, mut tbs, _) = tlv(certificate)? else {
        return None;
    };
    // [0] EXPLICIT version, optional.
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity, subject.
    for expected in [0x02, 0x30, 0x30, 0x30, 0x30] {
        let (tag, _, rest) = tlv(tbs)?;
        if tag != expected {
            return None;
        }
        tbs = rest;
    }
    let (0x30, spki, _) = tlv(tbs)? else {
        return None;
    };
    let (0x30, alg, rest) = tlv(spki)? else {
        return None;
    };
    if alg != ED25519_ALG_ID {
        return None;
    }
    let (0x03, bits, rest) = tlv(rest)? else {
        return None;
    };
    if !rest.is_empty() || bits.len() != 33 || bits[0] != 0 {
        return None;
    }
    bits[1..].try_into().ok()
}

fn bad_cert() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not used between seeders".into())
}

/// Checks a listener's certificate: an Ed25519 key, pinned to a node id when one is known.
#[derive(Debug)]
struct ServerVerifier {
    expected: Option<NodeId>,
    algs: WebPkiSupportedAlgorithms,
    /// The node that answered instead of the expected one, for the dialer's message.
    other: Arc<std::sync::OnceLock<NodeId>>,
}

/// Where a dial learns which node answered when it was not the one expected: rustls can
/// only say "invalid certificate", a person needs "that is node X, not Y".
pub type OtherNode = Arc<std::sync::OnceLock<NodeId>>;

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = ed25519_key_of(end_entity).ok_or_else(bad_cert)?;
        match self.expected {
            Some(id) if id.0 != key => {
                let _ = self.other.set(NodeId(key));
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Checks a dialer's certificate: any Ed25519 key (its id is learned, and the handshake
/// signature proves it holds the key).
#[derive(Debug)]
struct ClientVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        ed25519_key_of(end_entity).ok_or_else(bad_cert)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// rustls configuration for accepting connections.
pub fn server_config(identity: &NodeIdentity) -> Result<rustls::ServerConfig, NetError> {
    let provider = provider();
    let algs = provider.signature_verification_algorithms;
    let (cert, key) = certificate(identity)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(ClientVerifier { algs }))
        .with_single_cert(vec![cert], key)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![crate::wire::ALPN.to_vec()];
    Ok(config)
}

/// rustls configuration for dialing, pinning `expected` when given.
pub fn client_config(
    identity: &NodeIdentity,
    expected: Option<NodeId>,
) -> Result<rustls::ClientConfig, NetError> {
    client_config_noting(identity, expected, OtherNode::default())
}

/// [`client_config`], noting in `other` the node that answered when it is not `expected`.
pub fn client_config_noting(
    identity: &NodeIdentity,
    expected: Option<NodeId>,
    other: OtherNode,
) -> Result<rustls::ClientConfig, NetError> {
    let provider = provider();
    let algs = provider.signature_verification_algorithms;
    let (cert, key) = certificate(identity)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier {
            expected,
            algs,
            other,
        }))
        .with_client_auth_cert(vec![cert], key)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![crate::wire::ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_carries_the_node_key_and_nothing_else_passes() {
        let id = NodeIdentity::from_secret([5; 32]);
        let (cert, _) = certificate(&id).unwrap();
        assert_eq!(ed25519_key_of(&cert), Some(id.node_id().0));
        // Every truncation and most single-byte changes of the structure are refused or
        // give another key; none panics.
        for n in 0..cert.len() {
            let _ = ed25519_key_of(&cert[..n]);
            assert_ne!(
                ed25519_key_of(&cert[..n]),
                Some(id.node_id().0),
                "truncated at {n}"
            );
        }
        for i in 0..cert.len() {
            let mut t = cert.to_vec();
            t[i] ^= 0x01;
            let _ = ed25519_key_of(&t);
        }
        let mut long = cert.to_vec();
        long.push(0);
        assert_eq!(ed25519_key_of(&long), None);
        assert_eq!(ed25519_key_of(b""), None);
        assert_eq!(ed25519_key_of(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn chacha_leads_without_aes() {
        let p = provider();
        let first = p.cipher_suites[0].suite();
        if cpu_has_aes() {
            assert_ne!(first, rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        } else {
            assert_eq!(first, rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
        }
        assert!(p
            .cipher_suites
            .iter()
            .any(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    }
}
