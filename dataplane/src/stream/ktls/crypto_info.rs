//! The kernel's description of one direction of a TLS session (`struct
//! tls12_crypto_info_*` of linux/tls.h, for TLS 1.2 and 1.3 alike), built from the secrets
//! rustls hands over: the AEAD key, the 12-byte IV split as the kernel wants it (a 4-byte
//! salt and 8 bytes for GCM; all 12 for ChaCha20-Poly1305) and the next record's sequence
//! number, big-endian.

use rustls::ConnectionTrafficSecrets;

/// One direction's parameters, ready for `setsockopt(SOL_TLS, TLS_TX or TLS_RX)`.
#[derive(Clone, Copy)]
pub enum CryptoInfo {
    Aes128Gcm(libc::tls12_crypto_info_aes_gcm_128),
    Aes256Gcm(libc::tls12_crypto_info_aes_gcm_256),
    Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305),
}

/// A cipher the kernel has no `crypto_info` for here.
#[derive(Debug, thiserror::Error)]
#[error("cipher not supported by kernel TLS")]
pub struct UnsupportedCipher;

impl CryptoInfo {
    pub fn new(
        tls13: bool,
        seq: u64,
        secrets: &ConnectionTrafficSecrets,
    ) -> Result<CryptoInfo, UnsupportedCipher> {
        let version = if tls13 {
            libc::TLS_1_3_VERSION
        } else {
            libc::TLS_1_2_VERSION
        };
        let rec_seq = seq.to_be_bytes();
        Ok(match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                let (salt, iv) = split_gcm(iv.as_ref())?;
                CryptoInfo::Aes128Gcm(libc::tls12_crypto_info_aes_gcm_128 {
                    info: libc::tls_crypto_info {
                        version,
                        cipher_type: libc::TLS_CIPHER_AES_GCM_128,
                    },
                    iv,
                    key: exact(key.as_ref())?,
                    salt,
                    rec_seq,
                })
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                let (salt, iv) = split_gcm(iv.as_ref())?;
                CryptoInfo::Aes256Gcm(libc::tls12_crypto_info_aes_gcm_256 {
                    info: libc::tls_crypto_info {
                        version,
                        cipher_type: libc::TLS_CIPHER_AES_GCM_256,
                    },
                    iv,
                    key: exact(key.as_ref())?,
                    salt,
                    rec_seq,
                })
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                CryptoInfo::Chacha20Poly1305(libc::tls12_crypto_info_chacha20_poly1305 {
                    info: libc::tls_crypto_info {
                        version,
                        cipher_type: libc::TLS_CIPHER_CHACHA20_POLY1305,
                    },
                    iv: exact(iv.as_ref())?,
                    key: exact(key.as_ref())?,
                    salt: [],
                    rec_seq,
                })
            }
            _ => return Err(UnsupportedCipher),
        })
    }

    /// The structure's bytes, as `setsockopt` takes them.
    pub fn as_bytes(&self) -> &[u8] {
        fn bytes<T>(v: &T) -> &[u8] {
            // SAFETY: the crypto_info structs are plain byte arrays after two u16s, with no
            // padding (checked by the size test below); any bytes of them may be read.
            unsafe { std::slice::from_raw_parts((v as *const T).cast(), std::mem::size_of::<T>()) }
        }
        match self {
            CryptoInfo::Aes128Gcm(c) => bytes(c),
            CryptoInfo::Aes256Gcm(c) => bytes(c),
            CryptoInfo::Chacha20Poly1305(c) => bytes(c),
        }
    }

    /// The full 12-byte nonce base (salt followed by IV) and the key: what a peer
    /// implementing the record layer uses (the tests' stand-in for the kernel).
    #[cfg(test)]
    pub fn nonce_and_key(&self) -> (Vec<u8>, Vec<u8>, u64) {
        match self {
            CryptoInfo::Aes128Gcm(c) => (
                [&c.salt[..], &c.iv[..]].concat(),
                c.key.to_vec(),
                u64::from_be_bytes(c.rec_seq),
            ),
            CryptoInfo::Aes256Gcm(c) => (
                [&c.salt[..], &c.iv[..]].concat(),
                c.key.to_vec(),
                u64::from_be_bytes(c.rec_seq),
            ),
            CryptoInfo::Chacha20Poly1305(c) => {
                (c.iv.to_vec(), c.key.to_vec(), u64::from_be_bytes(c.rec_seq))
            }
        }
    }
}

fn split_gcm(iv: &[u8]) -> Result<([u8; 4], [u8; 8]), UnsupportedCipher> {
    if iv.len() != 12 {
        return Err(UnsupportedCipher);
    }
    Ok((exact(&iv[..4])?, exact(&iv[4..])?))
}

fn exact<const N: usize>(bytes: &[u8]) -> Result<[u8; N], UnsupportedCipher> {
    bytes.try_into().map_err(|_| UnsupportedCipher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn key(n: u8) -> AeadKey {
        AeadKey::from([n; 32])
    }

    /// The byte layout is linux/tls.h's: version, cipher, then iv, key, salt, rec_seq with
    /// no padding, the 12-byte IV split 4 + 8 for GCM, the sequence number big-endian.
    #[test]
    fn the_layout_is_the_kernel_s() {
        let iv: [u8; 12] = std::array::from_fn(|i| i as u8 + 1);
        let secrets = ConnectionTrafficSecrets::Aes256Gcm {
            key: key(0xaa),
            iv: Iv::new(iv),
        };
        let info = CryptoInfo::new(true, 0x0102_0304_0506_0708, &secrets).unwrap();
        let b = info.as_bytes();
        assert_eq!(b.len(), 4 + 8 + 32 + 4 + 8);
        assert_eq!(
            &b[..4],
            &[0x04, 0x03, 52, 0],
            "TLS 1.3 (0x0304), cipher 52, host order"
        );
        assert_eq!(&b[4..12], &iv[4..], "iv: the last 8 bytes");
        assert_eq!(&b[12..44], &[0xaa; 32]);
        assert_eq!(&b[44..48], &iv[..4], "salt: the first 4 bytes");
        assert_eq!(&b[48..], &[1, 2, 3, 4, 5, 6, 7, 8]);

        let info = CryptoInfo::new(
            false,
            5,
            &ConnectionTrafficSecrets::Chacha20Poly1305 {
                key: key(7),
                iv: Iv::new(iv),
            },
        )
        .unwrap();
        let b = info.as_bytes();
        assert_eq!(b.len(), 4 + 12 + 32 + 8);
        assert_eq!(&b[..4], &[0x03, 0x03, 54, 0], "TLS 1.2 (0x0303), cipher 54");
        assert_eq!(&b[4..16], &iv, "ChaCha20: the whole IV, no salt");
        assert_eq!(&b[48..], &5u64.to_be_bytes());

        assert_eq!(
            std::mem::size_of::<libc::tls12_crypto_info_aes_gcm_128>(),
            40
        );
    }

    /// A 16-byte key for AES-128 is taken; a key of the wrong length for its cipher is not.
    #[test]
    fn keys_of_the_wrong_length_are_refused() {
        let ok = CryptoInfo::new(
            true,
            0,
            &ConnectionTrafficSecrets::Aes128Gcm {
                key: AeadKey::from([3; 32]),
                iv: Iv::new([0; 12]),
            },
        );
        // AeadKey::from gives 32 bytes: too long for AES-128.
        assert!(ok.is_err());
    }
}
