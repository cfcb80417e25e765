//! RFC 9162 (Certificate Transparency v2) Merkle trees over SHA-256: tree hash,
//! inclusion proofs and consistency proofs, generated and verified.
//!
//! Leaf hash `H(0x00 || d)`, interior node `H(0x01 || left || right)`, the empty tree
//! hashes to `H("")`. A tree of `n` leaves splits at the largest power of two below `n`;
//! built bottom-up, that is pairing each level and carrying an odd last node up unchanged.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::hash::{sha256, sha256_prefixed, sha256_prefixed_pair, Hash};
use crate::limits::MERKLE_LEAVES_MAX;
use crate::parallel::run_with_threads;

/// A proof path is at most one hash per level of a 2^64-leaf tree.
pub const PROOF_HASHES_MAX: usize = 64;
/// Levels narrower than this are hashed on one thread; splitting them costs more than it saves.
const PARALLEL_LEVEL_MIN: usize = 4096;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256_prefixed(LEAF_PREFIX, &[data])
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256_prefixed(NODE_PREFIX, &[left, right])
}

/// Hash of the empty tree.
pub fn empty_root() -> Hash {
    sha256(b"")
}

fn check_leaf_count(count: usize) -> Result<()> {
    if count > MERKLE_LEAVES_MAX {
        return Err(Error::limit(
            "leaves",
            "MERKLE_LEAVES_MAX",
            MERKLE_LEAVES_MAX,
            count,
        ));
    }
    Ok(())
}

/// Leaf hashes of two leaves at once (interleaved on the CPU where it can).
fn leaf_hash_chunk<L: AsRef<[u8]>>(chunk: &[L], out: &mut [Hash]) {
    match chunk {
        [a, b] => {
            (out[0], out[1]) = sha256_prefixed_pair(LEAF_PREFIX, &[a.as_ref()], &[b.as_ref()]);
        }
        [a] => out[0] = leaf_hash(a.as_ref()),
        _ => unreachable!("chunks of two"),
    }
}

/// Leaf hashes of `leaves`, in parallel when there are many.
pub fn leaf_hashes<L: AsRef<[u8]> + Sync>(leaves: &[L]) -> Vec<Hash> {
    let mut hashes = vec![[0u8; 32]; leaves.len()];
    if leaves.len() >= PARALLEL_LEVEL_MIN {
        leaves
            .par_chunks(2)
            .zip(hashes.par_chunks_mut(2))
            .for_each(|(chunk, out)| leaf_hash_chunk(chunk, out));
    } else {
        for (chunk, out) in leaves.chunks(2).zip(hashes.chunks_mut(2)) {
            leaf_hash_chunk(chunk, out);
        }
    }
    hashes
}

/// The parents of four (or fewer) nodes: two node hashes at once where there are two.
fn parents_of(children: &[Hash], out: &mut [Hash]) {
    match children {
        [a, b, c, d] => {
            (out[0], out[1]) = sha256_prefixed_pair(NODE_PREFIX, &[a, b], &[c, d]);
        }
        [a, b, c] => {
            out[0] = node_hash(a, b);
            out[1] = *c;
        }
        [a, b] => out[0] = node_hash(a, b),
        [a] => out[0] = *a,
        _ => unreachable!("chunks of four"),
    }
}

/// Tree hash from already-computed leaf hashes.
pub fn root_from_leaf_hashes(mut level: Vec<Hash>) -> Hash {
    if level.is_empty() {
        return empty_root();
    }
    while level.len() > 1 {
        let mut parents = vec![[0u8; 32]; level.len().div_ceil(2)];
        if level.len() >= PARALLEL_LEVEL_MIN {
            level
                .par_chunks(4)
                .zip(parents.par_chunks_mut(2))
                .for_each(|(children, out)| parents_of(children, out));
        } else {
            for (children, out) in level.chunks(4).zip(parents.chunks_mut(2)) {
                parents_of(children, out);
            }
        }
        level = parents;
    }
    level[0]
}

/// RFC 9162 Merkle tree hash of `leaves`, on all cores or on `threads` of them.
pub fn root<L: AsRef<[u8]> + Sync>(leaves: &[L], threads: Option<usize>) -> Result<Hash> {
    check_leaf_count(leaves.len())?;
    run_with_threads(threads, || root_from_leaf_hashes(leaf_hashes(leaves)))
}

/// Largest power of two strictly below `n` (n >= 2).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Tree hash of a range of leaf hashes.
fn subtree_root(hashes: &[Hash]) -> Hash {
    root_from_leaf_hashes(hashes.to_vec())
}

/// RFC 9162 §2.1.3.1 inclusion proof (audit path) for leaf `index`.
pub fn inclusion_proof<L: AsRef<[u8]> + Sync>(leaves: &[L], index: usize) -> Result<Vec<Hash>> {
    check_leaf_count(leaves.len())?;
    if index >= leaves.len() {
        return Err(Error::invalid_argument(
            "index",
            format!("{index} is not below the tree size {}", leaves.len()),
        ));
    }
    Ok(inclusion_path(index, &leaf_hashes(leaves)))
}

/// Inclusion path over leaf hashes (RFC 9162 `PATH(m, D[n])`).
pub fn inclusion_path(mut index: usize, mut hashes: &[Hash]) -> Vec<Hash> {
    let mut path = Vec::new();
    while hashes.len() > 1 {
        let k = split_point(hashes.len());
        if index < k {
            path.push(subtree_root(&hashes[k..]));
            hashes = &hashes[..k];
        } else {
            path.push(subtree_root(&hashes[..k]));
            hashes = &hashes[k..];
            index -= k;
        }
    }
    path.reverse(); // PATH lists the deepest sibling first
    path
}

/// RFC 9162 §2.1.3.2: does `proof` show that `leaf` is leaf `index` of the tree of
/// `tree_size` leaves whose hash is `root`?
pub fn verify_inclusion(leaf: &[u8], index: u64, tree_size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= tree_size || proof.len() > PROOF_HASHES_MAX {
        return false;
    }
    let (mut f_n, mut s_n) = (index, tree_size - 1);
    let mut r = leaf_hash(leaf);
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && &r == root
}

/// RFC 9162 §2.1.4.1 consistency proof between the first `old_size` leaves and all of
/// `leaves`.
pub fn consistency_proof<L: AsRef<[u8]> + Sync>(leaves: &[L], old_size: usize) -> Result<Vec<Hash>> {
    check_leaf_count(leaves.len())?;
    if old_size == 0 || old_size > leaves.len() {
        return Err(Error::invalid_argument(
            "old_size",
            format!(
                "must be between 1 and the tree size {}, got {old_size}",
                leaves.len()
            ),
        ));
    }
    let hashes = leaf_hashes(leaves);
    let mut proof = Vec::new();
    subproof(old_size, &hashes, true, &mut proof);
    Ok(proof)
}

/// RFC 9162 `SUBPROOF(m, D[n], b)`, appending to `out`.
fn subproof(m: usize, hashes: &[Hash], complete_subtree: bool, out: &mut Vec<Hash>) {
    let n = hashes.len();
    if m == n {
        if !complete_subtree {
            out.push(subtree_root(hashes));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, &hashes[..k], complete_subtree, out);
        out.push(subtree_root(&hashes[k..]));
    } else {
        subproof(m - k, &hashes[k..], false, out);
        out.push(subtree_root(&hashes[..k]));
    }
}

/// RFC 9162 §2.1.4.2: does `proof` show that the tree of `old_size` leaves with hash
/// `old_root` is a prefix of the tree of `new_size` leaves with hash `new_root`?
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size || proof.len() > PROOF_HASHES_MAX {
        return false;
    }
    if old_size == 0 {
        // The empty tree is a prefix of every tree; there is nothing to prove.
        return proof.is_empty() && *old_root == empty_root();
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (path[0], path[0]);
    for c in &path[1..] {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    &f_r == old_root && &s_r == new_root && s_n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight from the RFC's recursive definition, for cross-checking the bottom-up build.
    fn reference_root(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = split_point(n);
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("leaf-{i}").into_bytes()).collect()
    }

    #[test]
    fn rfc6962_reference_roots() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/vectors/rfc6962/merkle_rfc6962.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
        let leaves: Vec<Vec<u8>> = vectors["leaves_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(
            hex::encode(root::<Vec<u8>>(&[], None).unwrap()),
            vectors["root_empty"].as_str().unwrap()
        );
        for case in vectors["roots"].as_array().unwrap() {
            let size = usize::try_from(case["tree_size"].as_u64().unwrap()).unwrap();
            assert_eq!(
                hex::encode(root(&leaves[..size], None).unwrap()),
                case["root"].as_str().unwrap(),
                "tree size {size}"
            );
        }
    }

    #[test]
    fn bottom_up_root_equals_recursive_definition() {
        for n in [1, 2, 3, 5, 8, 13, 100, 4097, 5000] {
            let leaves = leaves(n);
            assert_eq!(root(&leaves, None).unwrap(), reference_root(&leaves), "n = {n}");
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_for_small_trees() {
        for n in 1..=33 {
            let leaves = leaves(n);
            let tree_root = root(&leaves, None).unwrap();
            for (i, leaf) in leaves.iter().enumerate() {
                let proof = inclusion_proof(&leaves, i).unwrap();
                assert!(
                    verify_inclusion(leaf, i as u64, n as u64, &proof, &tree_root),
                    "n={n} i={i}"
                );
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_for_small_trees() {
        for n in 1..=33 {
            let leaves = leaves(n);
            let new_root = root(&leaves, None).unwrap();
            for m in 1..=n {
                let old_root = root(&leaves[..m], None).unwrap();
                let proof = consistency_proof(&leaves, m).unwrap();
                assert!(
                    verify_consistency(m as u64, n as u64, &old_root, &new_root, &proof),
                    "m={m} n={n}"
                );
            }
        }
    }

    #[test]
    fn out_of_range_arguments_are_errors_or_false() {
        let leaves = leaves(4);
        assert!(inclusion_proof(&leaves, 4).is_err());
        assert!(consistency_proof(&leaves, 0).is_err());
        assert!(consistency_proof(&leaves, 5).is_err());
        let tree_root = root(&leaves, None).unwrap();
        assert!(!verify_inclusion(&leaves[0], 4, 4, &[], &tree_root));
        assert!(!verify_consistency(5, 4, &tree_root, &tree_root, &[]));
    }
}
