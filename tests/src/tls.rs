//! A certificate authority made at test time (rcgen), so every TLS test runs real TLS against a CA no one
//! else trusts: server certificates for 127.0.0.1 (the doubles, etcd), client certificates for client
//! authentication (etcd's `--client-cert-auth`), PEM files for the binaries, and rustls server settings for
//! the doubles.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA whose certificate is written to `<dir>/ca.pem`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    dir: PathBuf,
}

/// A certificate the CA issued, with its key, as DER and as PEM files.
pub struct Issued {
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    /// A new CA; its files go into `dir`.
    pub fn new(dir: &Path) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Ringway test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        let cert_pem = cert.pem();
        std::fs::write(dir.join("ca.pem"), &cert_pem).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            cert_pem,
            dir: dir.to_path_buf(),
        }
    }

    /// `<dir>/ca.pem`: what a client passes as its CA.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn ca_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for 127.0.0.1 and localhost, written as `<name>.pem` and `<name>-key.pem`. It
    /// is good for client authentication too: etcd's JSON gateway dials etcd's own gRPC port with the
    /// server's certificate, which `--client-cert-auth` then checks.
    pub fn server(&self, name: &str) -> Issued {
        self.issue(
            name,
            vec!["127.0.0.1".into(), "localhost".into()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate with common name `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(name, Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth])
    }

    fn issue(
        &self,
        name: &str,
        names: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_file = self.dir.join(format!("{name}.pem"));
        let key_file = self.dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Issued {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            cert_file,
            key_file,
        }
    }

    /// rustls server settings presenting `issued` (no client authentication).
    pub fn server_config(&self, issued: &Issued) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![issued.cert.clone()],
                PrivateKeyDer::Pkcs8(issued.key.clone_key()),
            )
            .unwrap();
        Arc::new(config)
    }
}
