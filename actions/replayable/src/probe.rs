// The probe shared by every version of the test guest; each version's
// lib.rs sets EXTRA (a later version returns one more field) and MOVED (a
// later version calls another path).

attune_sdk::generate!("replayable", path = "../replayable/wit");

use attune_sdk::{http, kv, secrets};
use wasip2::clocks::{monotonic_clock, wall_clock};

struct Replayable;

impl Guest for Replayable {
    fn probe(url: String) -> Result<Probe, String> {
        let token = secrets::get("token").ok();
        let url = if MOVED { format!("{url}/moved") } else { url };
        let mut request = http::Request::get(&url);
        if let Some(token) = &token {
            request = http::Request::post(&format!("{url}?t={token}"), format!("token={token}"))
                .header("authorization", &format!("Bearer {token}"));
        }
        let began = monotonic_clock::now();
        let response = request.send().map_err(|e| e.to_string())?;
        let elapsed = monotonic_clock::now() - began;
        let wall = wall_clock::now().seconds;
        let random = wasip2::random::random::get_random_bytes(8);
        let counter = kv::increment("counter", 1).map_err(|e| format!("{e:?}"))?;
        let body = response.text();
        Ok(Probe {
            status: response.status,
            body,
            wall,
            elapsed,
            random: random.iter().map(|b| format!("{b:02x}")).collect(),
            counter,
            token: token.is_some(),
            extra: EXTRA.then(|| "next".to_string()),
        })
    }
}

export!(Replayable);
