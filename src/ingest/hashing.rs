//! Keyed hashing of user ids: HMAC-SHA-256 under the server's secret key.
//!
//! A plain SHA-256 of an id or e-mail can be reversed by dictionary; a keyed hash
//! cannot without the key, so only keyed hashes are ever stored.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Computes keyed hashes of distinct ids.
#[derive(Clone)]
pub struct UserHasher {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for UserHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserHasher(<key hidden>)")
    }
}

impl UserHasher {
    /// A hasher under `key` (any length; HMAC accepts every key size).
    pub fn new(key: &[u8]) -> Self {
        let keyed = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
        Self { keyed }
    }

    /// The lowercase hex HMAC-SHA-256 of `distinct_id`.
    pub fn hash(&self, distinct_id: &str) -> String {
        // Cloning the keyed state skips re-deriving the key pads on every call.
        let mut mac = self.keyed.clone();
        mac.update(distinct_id.as_bytes());
        // Into one buffer of the hex's size: `hex::encode` grows its string a char at a time.
        let mut hex = [0u8; 64];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut hex)
            .expect("a SHA-256 MAC is 32 bytes, 64 hex digits");
        String::from_utf8_lossy(&hex).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn matches_the_rfc_4231_test_vector() {
        // RFC 4231 test case 2.
        let hasher = UserHasher::new(b"Jefe");
        assert_eq!(
            hasher.hash("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn differs_by_key_and_from_a_plain_digest() {
        let a = UserHasher::new(b"key-a").hash("u_42");
        let b = UserHasher::new(b"key-b").hash("u_42");
        assert_ne!(a, b);
        assert_ne!(a, hex::encode(Sha256::digest(b"u_42")));
        assert_eq!(a, UserHasher::new(b"key-a").hash("u_42"));
    }
}
