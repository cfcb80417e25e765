//! Thread pools for the data-parallel work (batch verification, Merkle hashing).
//!
//! `None` means rayon's global pool (all cores, or `RAYON_NUM_THREADS`). A fixed thread
//! count gets its own pool, built once and kept, so an operator can reserve cores and a
//! benchmark can measure one core against two in the same process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::ThreadPool;

use crate::error::{Error, Result};

/// Most threads a caller may ask for.
pub const THREADS_MAX: usize = 256;

fn pools() -> &'static Mutex<HashMap<usize, Arc<ThreadPool>>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Sizes the global pool (what `None` runs on) at `count` threads: several nodes sharing
/// one host each take their share of its cores instead of all of them, where idle workers
/// spinning for work would take the CPU the other nodes need. Only before the pool's
/// first use; afterwards it is an error.
pub fn use_threads(count: usize) -> Result<()> {
    if count == 0 || count > THREADS_MAX {
        return Err(Error::invalid_argument(
            "threads",
            format!("must be between 1 and {THREADS_MAX}, got {count}"),
        ));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(count)
        .thread_name(|i| format!("medledger-{i}"))
        .build_global()
        .map_err(|e| Error::invalid_argument("threads", format!("the pool is running already: {e}")))
}

/// Runs `work` inside the pool for `threads` (or the global pool for `None`).
pub fn run_with_threads<T: Send>(threads: Option<usize>, work: impl FnOnce() -> T + Send) -> Result<T> {
    let Some(count) = threads else {
        return Ok(work());
    };
    if count == 0 || count > THREADS_MAX {
        return Err(Error::invalid_argument(
            "threads",
            format!("must be between 1 and {THREADS_MAX}, got {count}"),
        ));
    }
    let pool = {
        let mut pools = pools().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pool) = pools.get(&count) {
            Arc::clone(pool)
        } else {
            let pool = Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(count)
                    .thread_name(move |i| format!("medledger-{count}-{i}"))
                    .build()
                    .map_err(|e| Error::invalid_argument("threads", e.to_string()))?,
            );
            pools.insert(count, Arc::clone(&pool));
            pool
        }
    };
    Ok(pool.install(work))
}
