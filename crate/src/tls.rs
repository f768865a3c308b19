//! TLS material: PEM loading and checks, the development certificate, and
//! the tokio-quiche hooks that build BoringSSL contexts from memory.

use std::time::{SystemTime, UNIX_EPOCH};

use boring::asn1::Asn1Time;
use boring::bn::{BigNum, MsbOption};
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::ssl::{SslContextBuilder, SslMethod, SslVerifyMode, SslVersion};
use boring::x509::extension::{ExtendedKeyUsage, SubjectAlternativeName};
use boring::x509::store::X509StoreBuilder;
use boring::x509::{X509NameBuilder, X509};
use tokio_quiche::quic::ConnectionHook;
use tokio_quiche::settings::TlsCertificatePaths;

/// A TLS error with a stable code for JS.
#[derive(Debug)]
pub struct TlsError {
    /// `ERR_H3_...` code.
    pub code: &'static str,
    /// Human-readable message (not API).
    pub message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        code,
        message: message.into(),
    }
}

/// A parsed certificate chain and its private key, known to match.
pub struct Identity {
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl Identity {
    /// Parses PEM `cert` (leaf first, then intermediates) and PEM `key`, and
    /// checks that the key belongs to the leaf.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let chain = X509::stack_from_pem(cert).map_err(|e| {
            err(
                "ERR_H3_INVALID_CERT",
                format!("cert is not a PEM certificate: {e}"),
            )
        })?;
        if chain.is_empty() {
            return Err(err("ERR_H3_INVALID_CERT", "cert holds no PEM certificate"));
        }
        let key = PKey::private_key_from_pem(key).map_err(|e| {
            err(
                "ERR_H3_INVALID_KEY",
                format!("key is not a PEM private key: {e}"),
            )
        })?;
        let leaf_key = chain[0].public_key().map_err(|e| {
            err(
                "ERR_H3_INVALID_CERT",
                format!("cannot read the certificate's key: {e}"),
            )
        })?;
        if !leaf_key.public_eq(&key) {
            return Err(err(
                "ERR_H3_CERT_KEY_MISMATCH",
                "key does not match the certificate in cert",
            ));
        }
        Ok(Self { chain, key })
    }

    pub(crate) fn server_context(&self) -> Result<SslContextBuilder, boring::error::ErrorStack> {
        let mut b = SslContextBuilder::new(SslMethod::tls())?;
        b.set_min_proto_version(Some(SslVersion::TLS1_3))?;
        b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
        b.set_certificate(&self.chain[0])?;
        for extra in &self.chain[1..] {
            b.add_extra_chain_cert(extra.clone())?;
        }
        b.set_private_key(&self.key)?;
        b.check_private_key()?;
        Ok(b)
    }
}

/// A generated development certificate.
pub struct DevCert {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM PKCS#8 private key.
    pub key_pem: String,
    /// SHA-256 of the DER certificate (what `serverCertificateHashes` pins).
    pub sha256: Vec<u8>,
    /// Seconds since the epoch at which the certificate stops being valid.
    pub not_after: u64,
}

/// Generates an ECDSA P-256 self-signed certificate valid for `days`
/// (at most 14, the limit browsers put on pinned certificates) for
/// `localhost`, the loopback addresses and `extra_names`.
pub fn generate_dev_cert(days: u32, extra_names: &[String]) -> Result<DevCert, TlsError> {
    let e = |m: boring::error::ErrorStack| err("ERR_H3_CERT_GENERATION", m.to_string());
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(e)?;
    let ec = EcKey::generate(&group).map_err(e)?;
    let key = PKey::from_ec_key(ec).map_err(e)?;

    let mut name = X509NameBuilder::new().map_err(e)?;
    name.append_entry_by_nid(Nid::COMMONNAME, "h3node development certificate")
        .map_err(e)?;
    let name = name.build();

    let mut b = X509::builder().map_err(e)?;
    b.set_version(2).map_err(e)?;
    let mut serial = BigNum::new().map_err(e)?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false).map_err(e)?;
    let serial = serial.to_asn1_integer().map_err(e)?;
    b.set_serial_number(&serial).map_err(e)?;
    b.set_subject_name(&name).map_err(e)?;
    b.set_issuer_name(&name).map_err(e)?;
    b.set_pubkey(&key).map_err(e)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Back-dated a minute for clock skew; the whole span stays within `days`.
    let not_before = now - 60;
    let not_after = not_before + u64::from(days.clamp(1, 14)) * 86_400;
    let (nb, na) = (
        Asn1Time::from_unix(not_before as i64).map_err(e)?,
        Asn1Time::from_unix(not_after as i64).map_err(e)?,
    );
    b.set_not_before(&nb).map_err(e)?;
    b.set_not_after(&na).map_err(e)?;
    // No basicConstraints/keyUsage: the certificate is its own trust anchor
    // when a client trusts it as a CA (a CA:FALSE or signature-only key usage
    // would make that fail), and browsers pinning it by hash ignore both.
    b.append_extension(ExtendedKeyUsage::new().server_auth().build().map_err(e)?)
        .map_err(e)?;
    let mut san = SubjectAlternativeName::new();
    san.dns("localhost").ip("127.0.0.1").ip("::1");
    for n in extra_names {
        if n.parse::<std::net::IpAddr>().is_ok() {
            san.ip(n);
        } else if !n.is_empty() {
            san.dns(n);
        }
    }
    let san = san.build(&b.x509v3_context(None, None)).map_err(e)?;
    b.append_extension(san).map_err(e)?;
    b.sign(&key, MessageDigest::sha256()).map_err(e)?;
    let cert = b.build();
    let der = cert.to_der().map_err(e)?;
    Ok(DevCert {
        cert_pem: String::from_utf8(cert.to_pem().map_err(e)?).unwrap(),
        key_pem: String::from_utf8(key.private_key_to_pem_pkcs8().map_err(e)?).unwrap(),
        sha256: boring::sha::sha256(&der).to_vec(),
        not_after,
    })
}

/// SHA-256 of the first certificate in a PEM chain.
pub fn leaf_sha256(cert_pem: &[u8]) -> Option<Vec<u8>> {
    let chain = X509::stack_from_pem(cert_pem).ok()?;
    Some(boring::sha::sha256(&chain.first()?.to_der().ok()?).to_vec())
}

/// Builds the server's TLS context from memory.
pub struct ServerHook {
    /// The identity served.
    pub identity: Identity,
}

impl ConnectionHook for ServerHook {
    fn create_custom_ssl_context_builder(
        &self,
        _paths: TlsCertificatePaths<'_>,
    ) -> Option<SslContextBuilder> {
        self.identity.server_context().ok()
    }
}

/// How the client checks the server's certificate.
#[derive(Clone, Debug, Default)]
pub struct ClientTrust {
    /// Extra trusted CA certificates (PEM); when empty, the system store.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept exactly these leaf certificates (SHA-256 of DER), whatever
    /// signed them: dev certificates, like `serverCertificateHashes`.
    pub pinned_sha256: Vec<Vec<u8>>,
    /// Accept any certificate (tests only).
    pub insecure: bool,
}

/// Builds the client's TLS context.
pub struct ClientHook {
    /// Trust settings.
    pub trust: ClientTrust,
}

impl ClientHook {
    fn build(&self) -> Result<SslContextBuilder, boring::error::ErrorStack> {
        let mut b = SslContextBuilder::new(SslMethod::tls())?;
        b.set_min_proto_version(Some(SslVersion::TLS1_3))?;
        b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
        let t = &self.trust;
        if t.insecure {
            b.set_verify(SslVerifyMode::NONE);
        } else if !t.pinned_sha256.is_empty() {
            let pins = t.pinned_sha256.clone();
            b.set_verify_callback(SslVerifyMode::PEER, move |_preverified, ctx| {
                // Only the leaf decides; the chain of a pinned cert is not checked.
                match ctx.chain().and_then(|c| c.get(0)).or(ctx.current_cert()) {
                    Some(leaf) => leaf
                        .to_der()
                        .map(|der| pins.iter().any(|p| p[..] == boring::sha::sha256(&der)[..]))
                        .unwrap_or(false),
                    None => false,
                }
            });
        } else {
            if let Some(ca) = &t.ca_pem {
                let mut store = X509StoreBuilder::new()?;
                for c in X509::stack_from_pem(ca)? {
                    store.add_cert(c)?;
                }
                b.set_verify_cert_store(store.build())?;
            } else {
                b.set_default_verify_paths()?;
            }
            b.set_verify(SslVerifyMode::PEER);
        }
        Ok(b)
    }
}

impl ConnectionHook for ClientHook {
    fn create_custom_ssl_context_builder(
        &self,
        _paths: TlsCertificatePaths<'_>,
    ) -> Option<SslContextBuilder> {
        self.build().ok()
    }
}
