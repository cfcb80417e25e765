//! Wire types generated from `proto/medledger/wire/v1/envelope.proto`, and the hashes
//! defined over their canonical encoding.

use prost::Message;

use crate::error::{Error, Result};
use crate::hash::{sha256, Hash};

#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/medledger.wire.v1.rs"));
}

pub use v1::{Block, BlockHeader, CommitCertificate, CommitSignature, SignedTransaction, VoteType};

/// Decodes `bytes` as `M`, naming `field` in the error.
pub fn decode<M: Message + Default>(field: &str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::decode(field, e.to_string()))
}

/// Hash of a block: SHA-256 of the canonical encoding of its header.
pub fn header_hash(header: &BlockHeader) -> Hash {
    sha256(&header.encode_to_vec())
}

/// Hash of a transaction: SHA-256 of its canonical encoding.
pub fn tx_hash(tx: &SignedTransaction) -> Hash {
    sha256(&tx.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_hash_ignores_unknown_fields_and_field_order() {
        let header = BlockHeader {
            chain_id: "c".into(),
            height: 3,
            ..BlockHeader::default()
        };
        let canonical = header.encode_to_vec();
        // Same fields in reverse order, plus an unknown field 99 (varint 1).
        let mut shuffled = Vec::new();
        shuffled.extend_from_slice(&[0x10, 3]); // height = 3
        shuffled.extend_from_slice(&[0x0a, 1, b'c']); // chain_id = "c"
        shuffled.extend_from_slice(&[0x98, 0x06, 1]); // field 99 = 1
        let decoded: BlockHeader = decode("header", &shuffled).unwrap();
        assert_eq!(header_hash(&decoded), sha256(&canonical));
    }

    #[test]
    fn garbage_is_a_decode_error_naming_the_field() {
        let error = decode::<Block>("block", &[0xff, 0xff, 0xff]).unwrap_err();
        assert!(
            matches!(error, Error::Decode { ref field, .. } if field == "block"),
            "{error}"
        );
    }
}
