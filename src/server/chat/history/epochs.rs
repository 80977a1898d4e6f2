//! Room epochs: the number that tells one incarnation of a room from
//! another, so a client resuming with an old seq never reads a new
//! room's messages as its own.

use std::fs::File;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};
/// Picks room epochs: non-zero, distinct within a run, and unrelated
/// across runs.
///
/// Each epoch is a bijective 64-bit mix (SplitMix64's finalizer) of a seed
/// plus a counter: distinct counters give distinct epochs, so no two
/// incarnations in one run share one. The seed is 8 bytes of
/// `/dev/urandom`, so a restarted daemon's epochs are unrelated to the
/// last run's (the chance that a resuming client's old epoch names a new
/// room is 2^-64 per try); without `/dev/urandom` it falls back to the
/// wall clock in nanoseconds mixed with the process id, which differs
/// across restarts as long as the clock does not go back.
#[derive(Debug, Clone)]
pub struct Epochs {
    seed: u64,
    counter: u64,
}

impl Epochs {
    /// A generator seeded from `/dev/urandom` (see the type's docs).
    pub fn new() -> Epochs {
        let mut seed = [0u8; 8];
        let seed = match File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed)) {
            Ok(()) => u64::from_ne_bytes(seed),
            Err(_) => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                nanos ^ (u64::from(std::process::id()) << 48)
            }
        };
        Epochs::with_seed(seed)
    }

    /// A generator with a fixed seed (tests, and replaying a fuzz case).
    pub fn with_seed(seed: u64) -> Epochs {
        Epochs { seed, counter: 0 }
    }

    /// The next epoch, never 0.
    pub fn next_epoch(&mut self) -> u64 {
        loop {
            self.counter = self.counter.wrapping_add(1);
            let e = mix(self.seed.wrapping_add(self.counter));
            if e != 0 {
                return e;
            }
        }
    }
}

impl Default for Epochs {
    fn default() -> Epochs {
        Epochs::new()
    }
}

/// SplitMix64's finalizer: a bijection on u64 that scatters neighbours.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
