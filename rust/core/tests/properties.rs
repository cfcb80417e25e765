//! Property tests (proptest): proofs always verify and any flipped bit breaks them; the
//! codec round-trips; random bytes never crash the decoder or the validator; a batch
//! reports a bad signature at its index.

mod common;

use common::{Fixture, CHAIN_ID};
use medledger_core::block::{validate_block, Expectations};
use medledger_core::ed25519::{verify_batch, SigningKey};
use medledger_core::hash::Hash;
use medledger_core::merkle::{
    consistency_proof, inclusion_proof, root, verify_consistency, verify_inclusion,
};
use medledger_core::wire::{self, Block, BlockHeader, CommitCertificate, CommitSignature, SignedTransaction};
use proptest::prelude::*;
use prost::Message;

fn leaves_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..70)
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut flipped = *hash;
    flipped[(bit / 8) % 32] ^= 1 << (bit % 8);
    flipped
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn inclusion_proofs_verify_and_any_flipped_bit_fails(
        leaves in leaves_strategy(),
        index_seed in any::<usize>(),
        bit in 0usize..256,
    ) {
        let n = leaves.len();
        let index = index_seed % n;
        let tree_root = root(&leaves, None).unwrap();
        let proof = inclusion_proof(&leaves, index).unwrap();
        let (i, size) = (index as u64, n as u64);
        prop_assert!(verify_inclusion(&leaves[index], i, size, &proof, &tree_root));

        prop_assert!(!verify_inclusion(&leaves[index], i, size, &proof, &flip(&tree_root, bit)));
        let mut leaf = leaves[index].clone();
        leaf.push(0);
        prop_assert!(!verify_inclusion(&leaf, i, size, &proof, &tree_root));
        if let Some(first) = leaves[index].first() {
            let mut leaf = leaves[index].clone();
            leaf[0] = first ^ (1 << (bit % 8));
            prop_assert!(!verify_inclusion(&leaf, i, size, &proof, &tree_root));
        }
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k] = flip(&bad[k], bit);
            prop_assert!(!verify_inclusion(&leaves[index], i, size, &bad, &tree_root));
        }
        // Another index: only the same leaf at the same position verifies, unless the
        // leaf happens to be duplicated there.
        let other = (index + 1 + bit) % n;
        if other != index && leaves[other] != leaves[index] {
            prop_assert!(!verify_inclusion(&leaves[index], other as u64, size, &proof, &tree_root));
        }
        if !proof.is_empty() {
            prop_assert!(!verify_inclusion(&leaves[index], i, size, &proof[1..], &tree_root));
        }
    }

    #[test]
    fn consistency_proofs_verify_and_any_flipped_bit_fails(
        leaves in leaves_strategy(),
        old_seed in any::<usize>(),
        bit in 0usize..256,
    ) {
        let n = leaves.len();
        let m = 1 + old_seed % n;
        let new_root = root(&leaves, None).unwrap();
        let old_root = root(&leaves[..m], None).unwrap();
        let proof = consistency_proof(&leaves, m).unwrap();
        let (m64, n64) = (m as u64, n as u64);
        prop_assert!(verify_consistency(m64, n64, &old_root, &new_root, &proof));

        prop_assert!(!verify_consistency(m64, n64, &flip(&old_root, bit), &new_root, &proof));
        prop_assert!(!verify_consistency(m64, n64, &old_root, &flip(&new_root, bit), &proof));
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k] = flip(&bad[k], bit);
            prop_assert!(!verify_consistency(m64, n64, &old_root, &new_root, &bad));
        }
        if m < n {
            // Dropping the last proof hash leaves the new tree unexplained.
            prop_assert!(!verify_consistency(m64, n64, &old_root, &new_root, &proof[..proof.len() - 1]));
        }
    }

    #[test]
    fn blocks_round_trip_through_the_codec(
        chain_id in "[a-z0-9-]{1,20}",
        height in any::<u64>(),
        time in any::<u64>(),
        hashes in prop::collection::vec(prop::collection::vec(any::<u8>(), 32), 4),
        txs in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..100), prop::collection::vec(any::<u8>(), 32), prop::collection::vec(any::<u8>(), 64)),
            0..20,
        ),
    ) {
        let block = Block {
            header: Some(BlockHeader {
                chain_id,
                height,
                parent_hash: hashes[0].clone(),
                time_unix_ms: time,
                tx_root: hashes[1].clone(),
                tx_count: txs.len() as u32,
                app_hash: hashes[2].clone(),
                validators_hash: hashes[3].clone(),
                next_validators_hash: hashes[3].clone(),
                proposer: hashes[0].clone(),
            }),
            txs: txs
                .into_iter()
                .map(|(body, public_key, signature)| SignedTransaction { body, public_key, signature })
                .collect(),
        };
        let decoded: Block = wire::decode("block", &block.encode_to_vec()).unwrap();
        prop_assert_eq!(&decoded, &block);
        let commit = CommitCertificate {
            height,
            round: 3,
            block_hash: hashes[1].clone(),
            signatures: vec![CommitSignature { validator_index: 2, signature: hashes[2].clone() }],
        };
        let decoded: CommitCertificate = wire::decode("commit", &commit.encode_to_vec()).unwrap();
        prop_assert_eq!(decoded, commit);
    }

    #[test]
    fn random_bytes_never_crash_the_decoder_or_the_validator(
        block_bytes in prop::collection::vec(any::<u8>(), 0..600),
        commit_bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let _ = wire::decode::<Block>("block", &block_bytes);
        let _ = wire::decode::<CommitCertificate>("commit", &commit_bytes);
        let fixture = Fixture::new(4);
        let expect = Expectations {
            chain_id: CHAIN_ID,
            height: fixture.height,
            parent_hash: fixture.parent_hash,
            validators: &fixture.validators,
            next_validators: Some(&fixture.validators),
            app_hash: None,
            verified_tx_hashes: None,
            threads: Some(1),
        };
        prop_assert!(validate_block(&block_bytes, Some(&commit_bytes), &expect).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn a_batch_reports_one_bad_signature_at_its_index(
        count in 1usize..200,
        bad_seed in any::<usize>(),
        what in 0u8..3,
        byte in 0usize..64,
    ) {
        let bad = bad_seed % count;
        let keys: Vec<SigningKey> = (0..count).map(|i| SigningKey::from_seed(&[(i % 251) as u8; 32]).unwrap()).collect();
        let mut messages: Vec<Vec<u8>> = (0..count).map(|i| format!("payment {i}").into_bytes()).collect();
        let mut signatures: Vec<Vec<u8>> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m).to_vec()).collect();
        let mut public_keys: Vec<Vec<u8>> = keys.iter().map(|k| k.public_key().to_vec()).collect();
        match what {
            0 => signatures[bad][byte] ^= 0x01,
            1 => messages[bad].push(b'!'),
            _ => public_keys[bad] = SigningKey::from_seed(&[255; 32]).unwrap().public_key().to_vec(),
        }
        let verdicts = verify_batch(&public_keys, &messages, &signatures, None).unwrap();
        for (i, verdict) in verdicts.iter().enumerate() {
            prop_assert_eq!(*verdict, i != bad, "index {}", i);
        }
    }
}
