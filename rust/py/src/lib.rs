//! The Python face of medledger-core. This crate only converts arguments, releases the
//! GIL around the work, and maps `medledger_core::Error` to the exception classes defined
//! in `python/medledger/errors.py`. Every rule lives in `rust/core`.

// pyo3 hands extracted arguments over by value; borrowing them instead is not an option.
#![allow(clippy::needless_pass_by_value)]

use std::collections::HashSet;

use medledger_core::block::{self, Expectations, ValidatorSet};
use medledger_core::domain::{self, Domain};
use medledger_core::ed25519;
use medledger_core::hash::{self, Hash, HASH_LEN};
use medledger_core::{admission, channel, limits, merkle, parallel, wire, Error};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyType};

/// A core error on its way to Python. The orphan rule forbids `From<Error> for PyErr`
/// here, so binding functions return `CoreResult` and `?` wraps core errors in this.
#[derive(Debug)]
struct CoreError(Error);

type CoreResult<T> = Result<T, CoreError>;

impl From<Error> for CoreError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

/// The classes of `python/medledger/errors.py`, imported once per interpreter.
static DECODE_ERROR: GILOnceCell<Py<PyType>> = GILOnceCell::new();
static INVALID_ARGUMENT: GILOnceCell<Py<PyType>> = GILOnceCell::new();
static INVALID_BLOCK: GILOnceCell<Py<PyType>> = GILOnceCell::new();
static LIMIT_EXCEEDED: GILOnceCell<Py<PyType>> = GILOnceCell::new();

fn error_class<'py>(
    py: Python<'py>,
    cell: &'static GILOnceCell<Py<PyType>>,
    name: &str,
) -> PyResult<Bound<'py, PyType>> {
    cell.import(py, "medledger.errors", name).cloned()
}

/// The Python exception that corresponds to a core error: the class of the variant,
/// called with the message and the variant's fields (see `errors.py`). If the class
/// cannot be imported, the import's own error is raised instead.
impl From<CoreError> for PyErr {
    fn from(CoreError(error): CoreError) -> Self {
        Python::with_gil(|py| {
            let message = error.to_string();
            let raised = match error {
                Error::Decode { field, reason } => error_class(py, &DECODE_ERROR, "DecodeError")
                    .map(|class| PyErr::from_type(class, (message, field, reason))),
                Error::InvalidArgument { field, reason } => {
                    error_class(py, &INVALID_ARGUMENT, "InvalidArgument")
                        .map(|class| PyErr::from_type(class, (message, field, reason)))
                }
                Error::InvalidBlock { field, reason } => error_class(py, &INVALID_BLOCK, "InvalidBlock")
                    .map(|class| PyErr::from_type(class, (message, field, reason))),
                Error::LimitExceeded {
                    field,
                    limit_name,
                    limit,
                    actual,
                } => error_class(py, &LIMIT_EXCEEDED, "LimitExceeded")
                    .map(|class| PyErr::from_type(class, (message, field, limit_name, limit, actual))),
            };
            raised.unwrap_or_else(|import_failure| import_failure)
        })
    }
}

fn bytes<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, data)
}

fn hash_arg(field: &str, data: &[u8]) -> CoreResult<Hash> {
    data.try_into().map_err(|_| {
        CoreError(Error::InvalidArgument {
            field: field.to_owned(),
            reason: format!("must be {HASH_LEN} bytes, got {}", data.len()),
        })
    })
}

/// Borrowed views of a sequence of `bytes`. `bytes` objects are immutable, so the views
/// stay valid while the GIL is released as long as the owners are alive.
fn slices<'a>(items: &'a [Bound<'_, PyBytes>]) -> Vec<&'a [u8]> {
    items.iter().map(PyBytesMethods::as_bytes).collect()
}

fn hashes_arg(field: &str, items: &[Bound<'_, PyBytes>]) -> CoreResult<Vec<Hash>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| hash_arg(&format!("{field}[{i}]"), item.as_bytes()))
        .collect()
}

fn hash_list<'py>(py: Python<'py>, hashes: &[Hash]) -> Vec<Bound<'py, PyBytes>> {
    hashes.iter().map(|h| bytes(py, h)).collect()
}

/// Inputs below this many bytes (or items) are worked on without releasing the GIL.
///
/// Releasing it costs little, but getting it back does not: another thread that took it
/// in between (an LMDB writer, a gRPC poller) keeps it for up to the interpreter's switch
/// interval, 5 ms, so a 20 µs signature could wait 250 times as long. Only work that
/// takes long enough to win from running beside Python gives the GIL up.
const RELEASE_GIL_BYTES: usize = 64 * 1024;
const RELEASE_GIL_ITEMS: usize = 16;

fn run_heavy<T: Send>(py: Python<'_>, heavy: bool, work: impl FnOnce() -> T + Send) -> T {
    if heavy {
        py.allow_threads(work)
    } else {
        work()
    }
}

// ---------------------------------------------------------------------------------------
// Hashing and signatures

/// Sizes the Rust thread pool that batch verification and Merkle hashing run on when no
/// `threads` is given (see `medledger_core::parallel::use_threads`).
#[pyfunction]
fn use_threads(count: usize) -> CoreResult<()> {
    Ok(medledger_core::parallel::use_threads(count)?)
}

#[pyfunction]
fn sha256<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    let digest = run_heavy(py, data.len() >= RELEASE_GIL_BYTES, || hash::sha256(data));
    bytes(py, &digest)
}

#[pyclass(module = "medledger._core", frozen)]
struct SigningKey(ed25519::SigningKey);

#[pymethods]
impl SigningKey {
    #[staticmethod]
    fn generate() -> Self {
        Self(ed25519::SigningKey::generate())
    }

    #[staticmethod]
    fn from_seed(seed: &[u8]) -> CoreResult<Self> {
        Ok(Self(ed25519::SigningKey::from_seed(seed)?))
    }

    #[getter]
    fn public_key<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.public_key())
    }

    fn seed<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.seed())
    }

    fn sign<'py>(&self, py: Python<'py>, message: &[u8]) -> Bound<'py, PyBytes> {
        let heavy = message.len() >= RELEASE_GIL_BYTES;
        let signature = run_heavy(py, heavy, || self.0.sign(message));
        bytes(py, &signature)
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.0)
    }
}

#[pyfunction]
fn verify(py: Python<'_>, public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let heavy = message.len() >= RELEASE_GIL_BYTES;
    run_heavy(py, heavy, || ed25519::verify(public_key, message, signature))
}

#[pyfunction]
#[pyo3(signature = (public_keys, messages, signatures, *, threads=None))]
fn verify_batch(
    py: Python<'_>,
    public_keys: Vec<Bound<'_, PyBytes>>,
    messages: Vec<Bound<'_, PyBytes>>,
    signatures: Vec<Bound<'_, PyBytes>>,
    threads: Option<usize>,
) -> CoreResult<Vec<bool>> {
    let (keys, messages, signatures) = (slices(&public_keys), slices(&messages), slices(&signatures));
    let heavy = keys.len() >= RELEASE_GIL_ITEMS;
    let verdicts = run_heavy(py, heavy, || {
        ed25519::verify_batch(&keys, &messages, &signatures, threads)
    })?;
    Ok(verdicts)
}

/// (encoded, tx_hash, body_hash, valid) for each (body, public_key, signature).
type AdmittedTx<'py> = (
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    bool,
);

#[pyfunction]
#[pyo3(signature = (chain_id, bodies, public_keys, signatures, *, threads=None))]
fn admit_batch<'py>(
    py: Python<'py>,
    chain_id: &str,
    bodies: Vec<Bound<'py, PyBytes>>,
    public_keys: Vec<Bound<'py, PyBytes>>,
    signatures: Vec<Bound<'py, PyBytes>>,
    threads: Option<usize>,
) -> CoreResult<Vec<AdmittedTx<'py>>> {
    if public_keys.len() != bodies.len() || signatures.len() != bodies.len() {
        return Err(CoreError(Error::InvalidArgument {
            field: "bodies, public_keys, signatures".to_owned(),
            reason: format!(
                "must have equal lengths, got {}, {}, {}",
                bodies.len(),
                public_keys.len(),
                signatures.len()
            ),
        }));
    }
    let txs: Vec<wire::SignedTransaction> = bodies
        .iter()
        .zip(&public_keys)
        .zip(&signatures)
        .map(|((body, key), signature)| wire::SignedTransaction {
            body: body.as_bytes().to_vec(),
            public_key: key.as_bytes().to_vec(),
            signature: signature.as_bytes().to_vec(),
        })
        .collect();
    let heavy = txs.len() >= RELEASE_GIL_ITEMS;
    let admitted = run_heavy(py, heavy, || admission::admit_batch(chain_id, &txs, threads))?;
    Ok(admitted
        .into_iter()
        .map(|a| {
            (
                bytes(py, &a.encoded),
                bytes(py, &a.tx_hash),
                bytes(py, &a.body_hash),
                a.valid,
            )
        })
        .collect())
}

#[pyfunction]
fn signing_message<'py>(
    py: Python<'py>,
    domain: &str,
    chain_id: &str,
    payload: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let domain = Domain::from_name(domain)?;
    let message = domain::signing_message(domain, chain_id, payload)?;
    Ok(bytes(py, &message))
}

#[pyfunction]
fn vote_signing_message<'py>(
    py: Python<'py>,
    chain_id: &str,
    vote_type: u8,
    height: u64,
    round: u32,
    block_hash: &[u8],
) -> CoreResult<Bound<'py, PyBytes>> {
    let payload = domain::vote_payload(vote_type, height, round, block_hash)?;
    let message = domain::signing_message(Domain::Vote, chain_id, &payload)?;
    Ok(bytes(py, &message))
}

#[pyfunction]
fn check_channel_state(state: &[u8]) -> CoreResult<()> {
    // A state is at most STATE_BYTES_MAX (60 KiB): checked while holding the GIL.
    channel::check_state(state)?;
    Ok(())
}

/// (paid into each new lock, paid outright, refunded) by one update's encoded
/// PaymentBatch, each line checked; `groups[i]` lines pay into the i-th new lock.
#[pyfunction]
#[pyo3(signature = (batch, groups=Vec::new()))]
fn sum_channel_payments(py: Python<'_>, batch: &[u8], groups: Vec<u32>) -> CoreResult<(Vec<u64>, u64, u64)> {
    let heavy = batch.len() >= RELEASE_GIL_BYTES;
    let sums = run_heavy(py, heavy, || channel::sum_payments(batch, &groups))?;
    Ok((sums.locked, sums.paid, sums.refunded))
}

#[pyfunction]
#[pyo3(signature = (chain_id, states, public_keys, signatures, *, threads=None))]
fn verify_channel_states(
    py: Python<'_>,
    chain_id: &str,
    states: Vec<Bound<'_, PyBytes>>,
    public_keys: Vec<Bound<'_, PyBytes>>,
    signatures: Vec<Bound<'_, PyBytes>>,
    threads: Option<usize>,
) -> CoreResult<Vec<bool>> {
    let (states, keys, signatures) = (slices(&states), slices(&public_keys), slices(&signatures));
    let heavy = states.len() >= RELEASE_GIL_ITEMS;
    let verdicts = run_heavy(py, heavy, || {
        channel::verify_states(chain_id, &states, &keys, &signatures, threads)
    })?;
    Ok(verdicts)
}

// ---------------------------------------------------------------------------------------
// Merkle trees

#[pyfunction]
fn merkle_leaf_hash<'py>(py: Python<'py>, leaf: &[u8]) -> Bound<'py, PyBytes> {
    bytes(py, &merkle::leaf_hash(leaf))
}

#[pyfunction]
#[pyo3(signature = (leaves, *, threads=None))]
fn merkle_root<'py>(
    py: Python<'py>,
    leaves: Vec<Bound<'py, PyBytes>>,
    threads: Option<usize>,
) -> CoreResult<Bound<'py, PyBytes>> {
    let leaves = slices(&leaves);
    let root = py.allow_threads(|| merkle::root(&leaves, threads))?;
    Ok(bytes(py, &root))
}

#[pyfunction]
fn merkle_inclusion_proof<'py>(
    py: Python<'py>,
    leaves: Vec<Bound<'py, PyBytes>>,
    index: usize,
) -> CoreResult<Vec<Bound<'py, PyBytes>>> {
    let leaves = slices(&leaves);
    let proof = py.allow_threads(|| merkle::inclusion_proof(&leaves, index))?;
    Ok(hash_list(py, &proof))
}

#[pyfunction]
fn merkle_verify_inclusion(
    py: Python<'_>,
    leaf: &[u8],
    index: u64,
    tree_size: u64,
    proof: Vec<Bound<'_, PyBytes>>,
    root: &[u8],
) -> bool {
    // Malformed proofs and roots are simply not valid proofs.
    let (Ok(proof), Ok(root)) = (hashes_arg("proof", &proof), <[u8; HASH_LEN]>::try_from(root)) else {
        return false;
    };
    py.allow_threads(|| merkle::verify_inclusion(leaf, index, tree_size, &proof, &root))
}

#[pyfunction]
fn merkle_consistency_proof<'py>(
    py: Python<'py>,
    leaves: Vec<Bound<'py, PyBytes>>,
    old_size: usize,
) -> CoreResult<Vec<Bound<'py, PyBytes>>> {
    let leaves = slices(&leaves);
    let proof = py.allow_threads(|| merkle::consistency_proof(&leaves, old_size))?;
    Ok(hash_list(py, &proof))
}

#[pyfunction]
fn merkle_verify_consistency(
    py: Python<'_>,
    old_size: u64,
    new_size: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof: Vec<Bound<'_, PyBytes>>,
) -> bool {
    let (Ok(old_root), Ok(new_root), Ok(proof)) = (
        <[u8; HASH_LEN]>::try_from(old_root),
        <[u8; HASH_LEN]>::try_from(new_root),
        hashes_arg("proof", &proof),
    ) else {
        return false;
    };
    py.allow_threads(|| merkle::verify_consistency(old_size, new_size, &old_root, &new_root, &proof))
}

// ---------------------------------------------------------------------------------------
// Blocks

#[pyclass(name = "ValidatorSet", module = "medledger._core", frozen)]
struct PyValidatorSet(ValidatorSet);

#[pymethods]
impl PyValidatorSet {
    #[new]
    fn new(members: Vec<(Bound<'_, PyBytes>, u64)>) -> CoreResult<Self> {
        let members: Vec<(&[u8], u64)> = members
            .iter()
            .map(|(key, power)| (key.as_bytes(), *power))
            .collect();
        Ok(Self(ValidatorSet::new(&members)?))
    }

    #[getter]
    fn hash<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.hash())
    }

    #[getter]
    fn total_power(&self) -> u64 {
        self.0.total_power()
    }

    fn members<'py>(&self, py: Python<'py>) -> Vec<(Bound<'py, PyBytes>, u64)> {
        self.0
            .validators()
            .iter()
            .map(|v| (bytes(py, &v.public_key), v.voting_power))
            .collect()
    }

    fn __len__(&self) -> usize {
        self.0.validators().len()
    }
}

#[pyclass(name = "ValidatedBlock", module = "medledger._core", frozen, get_all)]
struct PyValidatedBlock {
    block_hash: Py<PyBytes>,
    chain_id: String,
    height: u64,
    parent_hash: Py<PyBytes>,
    time_unix_ms: u64,
    tx_root: Py<PyBytes>,
    app_hash: Py<PyBytes>,
    proposer: Py<PyBytes>,
    tx_hashes: Vec<Py<PyBytes>>,
    tx_signatures_verified: usize,
}

#[pyfunction]
#[pyo3(signature = (block, commit, *, chain_id, height, parent_hash, validators, next_validators=None, app_hash=None, verified_tx_hashes=None, threads=None))]
#[allow(clippy::too_many_arguments)]
fn validate_block(
    py: Python<'_>,
    block: &[u8],
    commit: Option<&[u8]>,
    chain_id: &str,
    height: u64,
    parent_hash: &[u8],
    validators: &PyValidatorSet,
    next_validators: Option<PyRef<'_, PyValidatorSet>>,
    app_hash: Option<&[u8]>,
    verified_tx_hashes: Option<Vec<Bound<'_, PyBytes>>>,
    threads: Option<usize>,
) -> CoreResult<PyValidatedBlock> {
    let parent_hash = hash_arg("parent_hash", parent_hash)?;
    let app_hash = app_hash.map(|h| hash_arg("app_hash", h)).transpose()?;
    let verified: Option<HashSet<Hash>> = verified_tx_hashes
        .map(|hashes| hashes_arg("verified_tx_hashes", &hashes).map(|v| v.into_iter().collect()))
        .transpose()?;
    let expect = Expectations {
        chain_id,
        height,
        parent_hash,
        validators: &validators.0,
        next_validators: next_validators.as_ref().map(|next| &next.0),
        app_hash,
        verified_tx_hashes: verified.as_ref(),
        threads,
    };
    let validated = py.allow_threads(|| block::validate_block(block, commit, &expect))?;
    let header = &validated.header;
    Ok(PyValidatedBlock {
        block_hash: bytes(py, &validated.block_hash).unbind(),
        chain_id: header.chain_id.clone(),
        height: header.height,
        parent_hash: bytes(py, &header.parent_hash).unbind(),
        time_unix_ms: header.time_unix_ms,
        tx_root: bytes(py, &header.tx_root).unbind(),
        app_hash: bytes(py, &header.app_hash).unbind(),
        proposer: bytes(py, &header.proposer).unbind(),
        tx_hashes: validated
            .tx_hashes
            .iter()
            .map(|h| bytes(py, h).unbind())
            .collect(),
        tx_signatures_verified: validated.tx_signatures_verified,
    })
}

#[pyfunction]
fn block_hash<'py>(py: Python<'py>, header: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
    let header: wire::BlockHeader = wire::decode("header", header)?;
    Ok(bytes(py, &wire::header_hash(&header)))
}

#[pyfunction]
fn tx_hash<'py>(py: Python<'py>, tx: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
    let tx: wire::SignedTransaction = wire::decode("tx", tx)?;
    Ok(bytes(py, &wire::tx_hash(&tx)))
}

#[pyfunction]
fn block_id<'py>(py: Python<'py>, block: &[u8]) -> CoreResult<Bound<'py, PyBytes>> {
    let id = py.allow_threads(|| block::block_id(block))?;
    Ok(bytes(py, &id))
}

#[pyfunction]
fn block_tx_hashes<'py>(py: Python<'py>, block: &[u8]) -> CoreResult<Vec<Bound<'py, PyBytes>>> {
    let hashes = py.allow_threads(|| wire::block_tx_hashes(block))?;
    Ok(hash_list(py, &hashes))
}

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(use_threads, module)?)?;
    module.add_function(wrap_pyfunction!(sha256, module)?)?;
    module.add_class::<SigningKey>()?;
    module.add_function(wrap_pyfunction!(verify, module)?)?;
    module.add_function(wrap_pyfunction!(verify_batch, module)?)?;
    module.add_function(wrap_pyfunction!(admit_batch, module)?)?;
    module.add_function(wrap_pyfunction!(signing_message, module)?)?;
    module.add_function(wrap_pyfunction!(vote_signing_message, module)?)?;
    module.add_function(wrap_pyfunction!(check_channel_state, module)?)?;
    module.add_function(wrap_pyfunction!(verify_channel_states, module)?)?;
    module.add_function(wrap_pyfunction!(sum_channel_payments, module)?)?;
    module.add_function(wrap_pyfunction!(merkle_leaf_hash, module)?)?;
    module.add_function(wrap_pyfunction!(merkle_root, module)?)?;
    module.add_function(wrap_pyfunction!(merkle_inclusion_proof, module)?)?;
    module.add_function(wrap_pyfunction!(merkle_verify_inclusion, module)?)?;
    module.add_function(wrap_pyfunction!(merkle_consistency_proof, module)?)?;
    module.add_function(wrap_pyfunction!(merkle_verify_consistency, module)?)?;
    module.add_class::<PyValidatorSet>()?;
    module.add_class::<PyValidatedBlock>()?;
    module.add_function(wrap_pyfunction!(validate_block, module)?)?;
    module.add_function(wrap_pyfunction!(block_hash, module)?)?;
    module.add_function(wrap_pyfunction!(tx_hash, module)?)?;
    module.add_function(wrap_pyfunction!(block_tx_hashes, module)?)?;
    module.add_function(wrap_pyfunction!(block_id, module)?)?;
    module.add("BLOCK_BYTES_MAX", limits::BLOCK_BYTES_MAX)?;
    module.add("BLOCK_TXS_MAX", limits::BLOCK_TXS_MAX)?;
    module.add("TX_BYTES_MAX", limits::TX_BYTES_MAX)?;
    module.add("VERIFY_BATCH_MAX", limits::VERIFY_BATCH_MAX)?;
    module.add("MERKLE_LEAVES_MAX", limits::MERKLE_LEAVES_MAX)?;
    module.add("CHAIN_ID_BYTES_MAX", limits::CHAIN_ID_BYTES_MAX)?;
    module.add("VALIDATORS_MAX", limits::VALIDATORS_MAX)?;
    module.add("THREADS_MAX", parallel::THREADS_MAX)?;
    module.add("STATE_BYTES_MAX", channel::STATE_BYTES_MAX)?;
    module.add("LOCKS_MAX", channel::LOCKS_MAX)?;
    module.add("BATCH_PAYMENTS_MAX", channel::BATCH_PAYMENTS_MAX)?;
    Ok(())
}
