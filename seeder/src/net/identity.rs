/*!
A node's identity: an ed25519 key pair made on first start and kept in the data folder. Its
public half is the node id that partners pin and that peers see in the TLS handshake.
*/

use std::path::Path;

use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use super::NetError;

/// A node's public id: its ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// First 8 hex characters, for logs and people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl std::str::FromStr for NodeId {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bytes = hex::decode(s.trim()).map_err(|_| NetError::BadNodeId(s.to_string()))?;
        let id: [u8; 32] = bytes
            .try_into()
            .map_err(|_| NetError::BadNodeId(s.to_string()))?;
        Ok(NodeId(id))
    }
}

/// The node's key pair.
pub struct NodeIdentity {
    key: SigningKey,
}

impl NodeIdentity {
    pub fn from_secret(secret: [u8; 32]) -> Self {
        NodeIdentity {
            key: SigningKey::from_bytes(&secret),
        }
    }

    pub fn generate() -> Self {
        NodeIdentity {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    pub fn node_id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// Read the identity at `path`, or make one and write it there (mode 0600, through a
    /// temporary file, so a crash never leaves half a key).
    pub fn load_or_create(path: &Path) -> Result<NodeIdentity, NetError> {
        let io = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| NetError::Io { what, path, source }
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let secret: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| NetError::BadIdentity {
                            path: path.to_path_buf(),
                            len: bytes.len(),
                        })?;
                Ok(NodeIdentity::from_secret(secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = NodeIdentity::generate();
                crate::store::file::write_atomic(path, 0o600, id.secret_bytes().as_slice())
                    .map_err(io("cannot write"))?;
                Ok(id)
            }
            Err(e) => Err(io("cannot read")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let a = NodeIdentity::load_or_create(&path).unwrap();
        let b = NodeIdentity::load_or_create(&path).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"short").unwrap();
        let err = NodeIdentity::load_or_create(&path).err().unwrap();
        assert!(matches!(err, NetError::BadIdentity { len: 5, .. }));
        let id: NodeId = a.node_id().to_hex().parse().unwrap();
        assert_eq!(id, a.node_id());
        assert!("xyz".parse::<NodeId>().is_err());
    }
}
