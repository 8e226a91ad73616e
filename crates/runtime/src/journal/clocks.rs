//! Clocks and random numbers the guest sees, from the host: the real ones
//! written to the journal while recording, the journal's while replaying.

use std::time::Duration;

use rand_wasi::SeedableRng;
use rand_wasi::rngs::StdRng;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use super::{Call, Tape};

/// `wasi:clocks/wall-clock` through a tape.
struct Wall {
    tape: Tape,
    replay: bool,
}

impl HostWallClock for Wall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        if self.replay {
            let (secs, nanos) = self.tape.next_wall();
            return Duration::new(secs, nanos);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.tape.record(Call::Wall {
            secs: now.as_secs(),
            nanos: now.subsec_nanos(),
        });
        now
    }
}

/// `wasi:clocks/monotonic-clock` through a tape: nanoseconds since the run
/// began, so a replay's readings mean the same.
struct Monotonic {
    tape: Tape,
    replay: bool,
    began: std::time::Instant,
}

impl HostMonotonicClock for Monotonic {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        if self.replay {
            return self.tape.next_monotonic();
        }
        let ns = self.began.elapsed().as_nanos() as u64;
        self.tape.record(Call::Monotonic { ns });
        ns
    }
}

/// A fresh random seed, hex.
pub fn fresh_seed() -> String {
    use rand_wasi::Rng;
    let mut seed = [0u8; 32];
    rand_wasi::rng().fill_bytes(&mut seed);
    hex::encode(seed)
}

/// Sets `wasi`'s clocks and random numbers to come through `tape`, every
/// random number from a generator seeded by `seed` (hex of 32 bytes; a
/// malformed one is all zeros, which a replay then shows as a different
/// result).
pub fn install(wasi: &mut WasiCtxBuilder, tape: &Tape, seed: &str) {
    let replay = tape.is_replay();
    let mut bytes = [0u8; 32];
    if let Ok(decoded) = hex::decode(seed) {
        let n = decoded.len().min(32);
        bytes[..n].copy_from_slice(&decoded[..n]);
    }
    // One seed, three independent streams (none tells another): secure
    // bytes, insecure bytes, and the insecure seed (a language runtime's
    // hash keys).
    let derive = |purpose: &[u8]| -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::new()
            .chain_update(purpose)
            .chain_update(bytes)
            .finalize()
            .into()
    };
    let mut seed128 = [0u8; 16];
    seed128.copy_from_slice(&derive(b"attune insecure seed")[..16]);
    wasi.wall_clock(Wall {
        tape: tape.clone(),
        replay,
    })
    .monotonic_clock(Monotonic {
        tape: tape.clone(),
        replay,
        began: std::time::Instant::now(),
    })
    .secure_random(StdRng::from_seed(derive(b"attune secure random")))
    .insecure_random(StdRng::from_seed(derive(b"attune insecure random")))
    .insecure_random_seed(u128::from_le_bytes(seed128));
}
