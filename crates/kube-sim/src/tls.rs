//! The simulator's PKI: a CA generated at start, a serving certificate for
//! 127.0.0.1/localhost, client certificates (CN = user, O = groups), and a
//! rustls server config that asks for (but does not require) client certs.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    pub ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

/// A client certificate and its private key, both PEM.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn err(e: rcgen::Error) -> anyhow::Error {
    anyhow::anyhow!("certificate generation failed: {e}")
}

impl Pki {
    pub fn generate() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-sim-ca");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(err)?).map_err(err)?;
        let ca_pem = ca.pem();

        let mut sp = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(err)?;
        sp.distinguished_name = DistinguishedName::new();
        sp.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().map_err(err)?;
        let server_cert = sp.signed_by(&server_key, &ca).map_err(err)?;
        Ok(Self {
            ca,
            ca_pem,
            server_cert: server_cert.der().clone(),
            server_key_der: server_key.serialize_der(),
        })
    }

    /// A client certificate for `user` in `groups`, signed by the CA.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> anyhow::Result<ClientCert> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, user);
        // rcgen keeps one value per attribute type; a custom type with the O
        // OID carries a second group. More are refused rather than dropped.
        match groups {
            [] => {}
            [a] => p.distinguished_name.push(DnType::OrganizationName, *a),
            [a, b] => {
                p.distinguished_name.push(DnType::OrganizationName, *a);
                p.distinguished_name
                    .push(DnType::CustomDnType(vec![2, 5, 4, 10]), *b);
            }
            _ => anyhow::bail!(
                "a generated client certificate carries at most 2 groups (O), got {}",
                groups.len()
            ),
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(err)?;
        let cert = p.signed_by(&key, &self.ca).map_err(err)?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.server_cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone())),
            )?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// User (CN) and groups (O) of a verified client certificate.
pub fn identity_from_cert(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((user, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_cert_identity_round_trips() {
        let pki = Pki::generate().unwrap();
        let c = pki.client_cert("alice", &["devs", "ops"]).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(c.cert_pem.as_bytes())
            .map(|d: CertificateDer<'static>| d)
            .unwrap();
        assert_eq!(
            identity_from_cert(&der),
            Some(("alice".into(), vec!["devs".into(), "ops".into()]))
        );
        assert!(pki.server_config().is_ok());
    }
}
