//! Named maxima. Every block, transaction and batch that crosses the core has one.

/// Largest encoded block accepted by `validate_block`.
pub const BLOCK_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Most transactions in one block.
pub const BLOCK_TXS_MAX: usize = 20_000;
/// Largest encoded `SignedTransaction`.
pub const TX_BYTES_MAX: usize = 64 * 1024;
/// Most signatures in one `verify_batch` call.
pub const VERIFY_BATCH_MAX: usize = 1 << 20;
/// Most leaves in one Merkle tree built in memory.
pub const MERKLE_LEAVES_MAX: usize = 1 << 24;
/// Longest chain id (it is length-prefixed with one byte in signed messages).
pub const CHAIN_ID_BYTES_MAX: usize = 64;
/// Most validators in a validator set.
pub const VALIDATORS_MAX: usize = 1_000;
