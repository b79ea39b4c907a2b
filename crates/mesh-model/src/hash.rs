//! Content hashes used as resource and collection versions.

use sha2::{Digest, Sha256};

/// A short, stable content hash (16 hex digits of SHA-256) of the given parts.
pub fn content_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_separates_parts() {
        let a = content_hash([b"ab".as_slice(), b"c".as_slice()]);
        let b = content_hash([b"a".as_slice(), b"bc".as_slice()]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert_eq!(a, content_hash([b"ab".as_slice(), b"c".as_slice()]));
    }
}
