//! rustls client configuration: the configured CA file, or the system roots.

use crate::DirectoryError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;

/// Trusts the CAs in `ca_file`, or the system's roots when `None`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| {
                    DirectoryError::Config(format!("cannot read CA file {}: {e}", path.display()))
                })?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| DirectoryError::Config(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(DirectoryError::Config(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    DirectoryError::Config(format!("CA file {}: {e}", path.display()))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(DirectoryError::Config(
                    "no system CA certificates found; set the directory CA file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError::Tls(Box::new(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed P-256 CA certificate, made once for this test.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBmjCCAT+gAwIBAgIUA0OiMsA/JlZBjJU1ZAHL1czB2AgwCgYIKoZIzj0EAwIw
ITEfMB0GA1UEAwwWc2hhZG93c3luYyB0bHMgdGVzdCBDQTAgFw0yNjExMjUxMDEz
MTNaGA8yMTI2MTEwMTEwMTMxM1owITEfMB0GA1UEAwwWc2hhZG93c3luYyB0bHMg
dGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABOcnIyyqr9XuumkF9abJ
zyppZS++6vwnJpSXcFR+2z+shZb2LdzsRLR2aYfYCWpawkr8g4AlynvlJn9VeTbR
YKujUzBRMB0GA1UdDgQWBBRDuI9ly+ID9VJg8M14wKyrW/1NhzAfBgNVHSMEGDAW
gBRDuI9ly+ID9VJg8M14wKyrW/1NhzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49
BAMCA0kAMEYCIQCVHCVxiTp4wRR9hN7DyIjsxD6cJzsS3oRqwksul1IAEgIhAPUD
tHLAUIz1aQRquxT2BKEHcY+2jMr3XFV3yJHtZkg3
-----END CERTIFICATE-----
";

    fn ca_file(name: &str, text: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("shadowsync-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn config_error(path: &Path) -> String {
        match client_config(Some(path)) {
            Err(DirectoryError::Config(m)) => m,
            other => panic!("{path:?}: {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn the_ca_file_is_read_as_pem() {
        // Text around the certificate (as `openssl x509 -text` leaves) is skipped.
        let good = ca_file("good.pem", &format!("Subject: CN=test\n{CA_PEM}"));
        assert!(client_config(Some(&good)).is_ok());
        let empty = ca_file("empty.pem", "no certificate here\n");
        assert!(config_error(&empty).contains("holds no PEM certificate"));
        let bad = ca_file(
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n",
        );
        assert!(config_error(&bad).starts_with("CA file "));
        let missing = std::env::temp_dir().join("shadowsync-tls-missing/ca.pem");
        assert!(config_error(&missing).contains("cannot read CA file"));
        for path in [good, empty, bad] {
            let _ = std::fs::remove_file(path);
        }
    }
}
