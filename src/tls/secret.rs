//! The cluster secret: a random key every node shares, like the CA certificate, with which
//! the nodes sign what they hand to clients and must be able to trust back (context tokens).
//! `quorumkv certs` makes it next to the CA as `cluster.secret` (mode 0600).

use std::fmt;
use std::path::Path;

use super::{TlsError, io_err, read_private_file, write_private_file};

/// Bytes of a message authentication code: 128 bits, past guessing.
pub const MAC_LEN: usize = 16;

/// The shared key.
#[derive(Clone)]
pub struct ClusterSecret {
    key: [u8; 32],
}

/// Never prints the key.
impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// A new random secret.
    pub fn generate() -> ClusterSecret {
        ClusterSecret {
            key: rand::random(),
        }
    }

    /// A secret from its 32 bytes (tests, and nodes started in-process).
    pub fn from_bytes(key: [u8; 32]) -> ClusterSecret {
        ClusterSecret { key }
    }

    /// Reads a secret written by [`ClusterSecret::save`].
    pub fn load(path: &Path) -> Result<ClusterSecret, TlsError> {
        let text = read_private_file(path)?;
        let bad = || {
            io_err(path)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a cluster secret (64 hexadecimal digits); copy cluster.secret from the \
                 host that ran `quorumkv certs`",
            ))
        };
        let hex = text.trim();
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(ClusterSecret { key })
    }

    /// Writes the secret as hexadecimal, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), TlsError> {
        let hex: String = self.key.iter().map(|b| format!("{b:02x}")).collect();
        write_private_file(path, &format!("{hex}\n"))
    }

    /// The code that proves `parts` were signed with this secret. Each part is length-prefixed,
    /// so no two different lists of parts sign alike.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..MAC_LEN]);
        out
    }

    /// Whether `mac` is the code of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], mac: &[u8]) -> bool {
        let expected = self.mac(parts);
        if mac.len() != MAC_LEN {
            return false;
        }
        expected
            .iter()
            .zip(mac)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_bind_every_part_and_the_key() {
        let s = ClusterSecret::from_bytes([7; 32]);
        let mac = s.mac(&[b"kv", b"a", b"ctx"]);
        assert!(s.verify(&[b"kv", b"a", b"ctx"], &mac));
        assert!(!s.verify(&[b"kv", b"b", b"ctx"], &mac));
        assert!(!s.verify(&[b"kva", b"", b"ctx"], &mac));
        assert!(!s.verify(&[b"kv", b"a", b"ctx"], &mac[..8]));
        let other = ClusterSecret::from_bytes([8; 32]);
        assert!(!other.verify(&[b"kv", b"a", b"ctx"], &mac));
    }

    #[test]
    fn a_saved_secret_loads_back() {
        let dir = std::env::temp_dir().join(format!("qkv-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.secret");
        let s = ClusterSecret::generate();
        s.save(&path).unwrap();
        let back = ClusterSecret::load(&path).unwrap();
        assert_eq!(back.mac(&[b"x"]), s.mac(&[b"x"]));
        std::fs::write(&path, "zz").unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }
}
