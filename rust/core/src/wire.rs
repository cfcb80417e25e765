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

/// The hash of every transaction in an encoded block, in order, computed in parallel: a
/// node looks each up among the transactions it already verified before validating.
pub fn block_tx_hashes(block_bytes: &[u8]) -> Result<Vec<Hash>> {
    use rayon::prelude::*;

    if block_bytes.len() > crate::limits::BLOCK_BYTES_MAX {
        return Err(Error::limit(
            "block",
            "BLOCK_BYTES_MAX",
            crate::limits::BLOCK_BYTES_MAX,
            block_bytes.len(),
        ));
    }
    let block: Block = decode("block", block_bytes)?;
    Ok(block.txs.par_iter().map(tx_hash).collect())
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
    fn block_tx_hashes_are_the_hashes_of_each_transaction_in_order() {
        let txs: Vec<SignedTransaction> = (0..5u8)
            .map(|i| SignedTransaction {
                body: vec![i; 3],
                public_key: vec![i; 32],
                signature: vec![i; 64],
            })
            .collect();
        let block = Block {
            header: Some(BlockHeader::default()),
            txs: txs.clone(),
        };
        let hashes = block_tx_hashes(&block.encode_to_vec()).unwrap();
        assert_eq!(hashes, txs.iter().map(tx_hash).collect::<Vec<_>>());
        assert!(block_tx_hashes(&[0xff]).is_err());
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
