//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `tests/vectors/<name>` in the repository (see tests/vectors/README.md).
pub fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/vectors")
        .join(name)
}

pub fn read_json(name: &str) -> serde_json::Value {
    let path = vector_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

use medledger_core::block::ValidatorSet;
use medledger_core::domain::{signing_message, vote_payload, Domain};
use medledger_core::ed25519::SigningKey;
use medledger_core::hash::Hash;
use medledger_core::merkle;
use medledger_core::wire::{
    self, Block, BlockHeader, CommitCertificate, CommitSignature, SignedTransaction, VoteType,
};
use medledger_core::Error;
use prost::Message;

pub const CHAIN_ID: &str = "medledger-test";

/// The field an error names.
pub fn field_of(error: &Error) -> &str {
    match error {
        Error::Decode { field, .. }
        | Error::InvalidArgument { field, .. }
        | Error::LimitExceeded { field, .. }
        | Error::InvalidBlock { field, .. } => field,
    }
}

pub fn signed_tx(key: &SigningKey, chain_id: &str, body: &[u8]) -> SignedTransaction {
    let message = signing_message(Domain::Transaction, chain_id, body).unwrap();
    SignedTransaction {
        body: body.to_vec(),
        public_key: key.public_key().to_vec(),
        signature: key.sign(&message).to_vec(),
    }
}

/// A network of `n` equal-power validators and a few client keys.
#[derive(Debug)]
pub struct Fixture {
    pub validator_keys: Vec<SigningKey>,
    pub validators: ValidatorSet,
    pub clients: Vec<SigningKey>,
    pub parent_hash: Hash,
    pub height: u64,
}

impl Fixture {
    pub fn new(validator_count: usize) -> Self {
        let validator_keys: Vec<SigningKey> = (0..validator_count)
            .map(|i| SigningKey::from_seed(&[100 + i as u8; 32]).unwrap())
            .collect();
        let keys: Vec<[u8; 32]> = validator_keys.iter().map(SigningKey::public_key).collect();
        let members: Vec<(&[u8], u64)> = keys.iter().map(|k| (k.as_slice(), 10)).collect();
        Self {
            validators: ValidatorSet::new(&members).unwrap(),
            validator_keys,
            clients: (0u8..4)
                .map(|i| SigningKey::from_seed(&[i; 32]).unwrap())
                .collect(),
            parent_hash: [7; 32],
            height: 5,
        }
    }

    pub fn txs(&self, count: usize) -> Vec<SignedTransaction> {
        (0..count)
            .map(|i| {
                signed_tx(
                    &self.clients[i % self.clients.len()],
                    CHAIN_ID,
                    format!("tx body {i}").as_bytes(),
                )
            })
            .collect()
    }

    /// A well-formed block carrying `txs`, with a correct header.
    pub fn block(&self, txs: Vec<SignedTransaction>) -> Block {
        let leaves: Vec<Vec<u8>> = txs.iter().map(Message::encode_to_vec).collect();
        let header = BlockHeader {
            chain_id: CHAIN_ID.into(),
            height: self.height,
            parent_hash: self.parent_hash.to_vec(),
            time_unix_ms: 1_700_000_000_000,
            tx_root: merkle::root(&leaves, None).unwrap().to_vec(),
            tx_count: txs.len() as u32,
            app_hash: vec![3; 32],
            validators_hash: self.validators.hash().to_vec(),
            next_validators_hash: self.validators.hash().to_vec(),
            proposer: self.validator_keys[0].public_key().to_vec(),
        };
        Block {
            header: Some(header),
            txs,
        }
    }

    /// A commit certificate for `block` signed by the validators at `signers`.
    pub fn commit(&self, block: &Block, signers: &[u32]) -> CommitCertificate {
        let header = block.header.as_ref().unwrap();
        let block_hash = wire::header_hash(header);
        let payload = vote_payload(VoteType::Precommit as u8, header.height, 0, &block_hash).unwrap();
        let message = signing_message(Domain::Vote, CHAIN_ID, &payload).unwrap();
        CommitCertificate {
            height: header.height,
            round: 0,
            block_hash: block_hash.to_vec(),
            signatures: signers
                .iter()
                .map(|&i| CommitSignature {
                    validator_index: i,
                    signature: self.validator_keys[i as usize].sign(&message).to_vec(),
                })
                .collect(),
        }
    }
}
