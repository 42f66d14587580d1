//! Test certificates made in-process: a self-signed RSA certificate and its key, as Entra ID
//! client assertions (RS256 or PS256) need, so that tests need no `openssl` command.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, PKCS_RSA_SHA256,
};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use sha1::{Digest, Sha1};

/// A self-signed certificate and its unencrypted private key.
#[derive(Clone)]
pub struct RsaCertificate {
    pub certificate_pem: String,
    pub certificate_der: Vec<u8>,
    /// PKCS#8 (`PRIVATE KEY`), what `openssl req -newkey` writes.
    pub private_key_pem: String,
    /// The same key as PKCS#1 (`RSA PRIVATE KEY`), the older form.
    pub private_key_pkcs1_pem: String,
    /// SubjectPublicKeyInfo (`PUBLIC KEY`).
    pub public_key_pem: String,
    /// base64url(SHA-1 of the DER): the thumbprint a client assertion's `x5t` header carries.
    pub x5t: String,
    /// base64url(SHA-256 of the DER): what the `x5t#S256` header carries (Entra ID's current
    /// recommendation, with PS256).
    pub x5t_s256: String,
}

impl std::fmt::Debug for RsaCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaCertificate")
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

/// A new 2048-bit RSA key and a self-signed SHA256withRSA certificate for `common_name`, marked
/// as a CA as `openssl req -x509` does (so it also serves as a trust anchor). Making the key
/// takes up to a few tenths of a second (the prime search is random): make one per test, not
/// one per assertion. Panics on failure, as a test fixture may.
pub fn rsa_certificate(common_name: &str) -> RsaCertificate {
    // rcgen's ring backend signs with RSA but cannot make RSA keys: the rsa crate makes it.
    let rsa_key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key generation");
    let private_key_pem = rsa_key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8 encoding")
        .to_string();
    let private_key_pkcs1_pem = rsa_key
        .to_pkcs1_pem(LineEnding::LF)
        .expect("PKCS#1 encoding")
        .to_string();
    let key_pair = KeyPair::from_pkcs8_pem_and_sign_algo(&private_key_pem, &PKCS_RSA_SHA256)
        .expect("rcgen reads the RSA key");

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let certificate = params
        .self_signed(&key_pair)
        .expect("self-signed certificate");
    let certificate_der = certificate.der().to_vec();
    RsaCertificate {
        certificate_pem: certificate.pem(),
        x5t: URL_SAFE_NO_PAD.encode(Sha1::digest(&certificate_der)),
        x5t_s256: URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&certificate_der)),
        certificate_der,
        private_key_pem,
        private_key_pkcs1_pem,
        public_key_pem: key_pair.public_key_pem(),
    }
}
