//! Key types and key generation (ECDSA by ring, RSA by the `rsa` crate
//! fed from ring's generator).

use std::fmt;
use std::io::{self};
use std::thread;

use super::*;
use rcgen::KeyPair;
use ring::rand::{SecureRandom, SystemRandom};

/// The algorithm of newly generated keys; existing keys are kept whatever
/// their type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    #[default]
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    #[value(name = "rsa-2048")]
    Rsa2048,
    #[value(name = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    pub(super) fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyType::EcdsaP256 => None,
            KeyType::Rsa2048 => Some(2048),
            KeyType::Rsa4096 => Some(4096),
        }
    }

    pub(super) fn generate(self) -> Result<KeyPair, CertError> {
        let keygen = |source: Box<dyn std::error::Error + Send + Sync>| CertError::Keygen {
            key_type: self,
            source,
        };
        match self.rsa_bits() {
            None => {
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| keygen(e.into()))
            }
            Some(bits) => {
                // ring signs RSA but cannot generate RSA keys: generate with
                // `rsa`, then load the PKCS#8 into ring so signing goes there.
                use rsa::pkcs8::EncodePrivateKey;
                let mut rng = RingRng::new()?;
                let key = rsa::RsaPrivateKey::new(&mut rng, bits).map_err(|e| keygen(e.into()))?;
                let der = key.to_pkcs8_der().map_err(|e| keygen(e.into()))?;
                KeyPair::try_from(der.as_bytes()).map_err(|e| keygen(e.into()))
            }
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa4096 => "rsa-4096",
        })
    }
}

/// `rsa` wants a `rand_core` RNG; ring's `SystemRandom` is the kernel's
/// `getrandom`, which is what we want anyway.
pub(super) struct RingRng(SystemRandom);

impl RingRng {
    /// Probes the source once, so `fill_bytes` (which cannot return an error)
    /// only panics if the kernel stops answering mid-generation.
    pub(super) fn new() -> Result<Self, CertError> {
        let rng = SystemRandom::new();
        rng.fill(&mut [0u8; 1]).map_err(|_| CertError::Entropy)?;
        Ok(RingRng(rng))
    }
}

impl rsa::rand_core::RngCore for RingRng {
    fn next_u32(&mut self) -> u32 {
        rsa::rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rsa::rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if let Err(e) = self.try_fill_bytes(dest) {
            panic!("kernel random source failed after a successful probe: {e}");
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.0
            .fill(dest)
            .map_err(|_| rsa::rand_core::Error::new(io::Error::other("getrandom failed")))
    }
}

impl rsa::rand_core::CryptoRng for RingRng {}

/// Wraps a SEC1 ECPrivateKey (RFC 5915) in a PKCS#8 PrivateKeyInfo, the
/// only form ring reads; ring then checks the curve and the public key. The
/// curve comes from the key's own parameters, which OpenSSL always writes.
pub(super) fn sec1_to_pkcs8(sec1_der: &[u8]) -> Option<Vec<u8>> {
    use pkcs8::der::{Decode, Encode};
    let key = sec1::EcPrivateKey::from_der(sec1_der).ok()?;
    let curve = key.parameters?.named_curve()?;
    let info = pkcs8::PrivateKeyInfo::new(
        pkcs8::AlgorithmIdentifierRef {
            oid: sec1::ALGORITHM_OID,
            parameters: Some((&curve).into()),
        },
        sec1_der,
    );
    info.to_der().ok()
}

pub(super) fn is_rsa(key: &KeyPair) -> bool {
    key.algorithm() == &rcgen::PKCS_RSA_SHA256
}

pub(super) fn generate_keys(key_type: KeyType, count: usize) -> Result<Vec<KeyPair>, CertError> {
    if count > 1 && key_type.rsa_bits().is_some() {
        // Finding RSA primes dominates (seconds for 4096 bits); use the cores.
        thread::scope(|scope| {
            let handles: Vec<_> = (0..count)
                .map(|_| scope.spawn(|| key_type.generate()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    } else {
        (0..count).map(|_| key_type.generate()).collect()
    }
}
