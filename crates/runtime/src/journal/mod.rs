//! The journal of one execution: every answer its sandbox received, in
//! order, so the same component (or the next version of it) can be run
//! again offline against what the first run saw.
//!
//! While recording, the host appends one [`Call`] per answer: each wall and
//! monotonic clock reading, each outbound HTTP exchange (the request as a
//! fingerprint, the response whole), each key-value call and its answer,
//! and each secret read by name (never its value). Random numbers come from
//! a generator seeded by the journal's [`Journal::seed`], so the seed stands
//! for every byte drawn. Everything is redacted of the run's secret values
//! before it is kept.
//!
//! While replaying, the same host calls are answered from the journal:
//! clocks and random numbers from their own streams, everything else in
//! order. A call the journal does not hold at that point fails for the
//! guest, and the first such call is the run's [`Divergence`]. Nothing
//! leaves the sandbox: no request is sent and no key is written.
//!
//! A journal that would pass its cap stops keeping calls and is marked not
//! replayable with the reason; it is never cut silently.

pub mod clocks;
pub mod kv;

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The journal's format version.
pub const FORMAT: u32 = 1;

/// The default cap on one journal, in bytes of calls kept.
pub const DEFAULT_CAP: usize = 1 << 20;

/// What one run learned from the host, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Journal {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// The export that ran.
    pub action: String,
    /// SHA-256 of the component that ran, when the runner knows it.
    #[serde(default)]
    pub component: String,
    /// Where the component came from, for a local run (`attune action run
    /// FILE … --record`): the file or built-in pack named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Its parameters (on a server, left out: the execution holds them).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Object)]
    pub params: Value,
    /// Hex of the 32 bytes seeding every random number the guest drew.
    pub seed: String,
    /// The answers, in the order the guest received them.
    #[schema(value_type = Vec<Object>)]
    pub calls: Vec<Call>,
    /// How the run ended: succeeded, failed or timed_out (on a server, left
    /// out like the result and error: the execution holds them).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Its error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Why the run cannot be replayed, when it cannot (its journal passed
    /// the cap); its calls are then not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_replayable: Option<String>,
}

/// One answer the sandbox received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Call {
    /// A reading of `wasi:clocks/wall-clock`.
    Wall {
        /// Seconds since the Unix epoch.
        secs: u64,
        /// Nanoseconds within the second.
        nanos: u32,
    },
    /// A reading of `wasi:clocks/monotonic-clock`.
    Monotonic {
        /// Nanoseconds.
        ns: u64,
    },
    /// One outbound HTTP exchange.
    Http {
        /// `METHOD URL`.
        request: String,
        /// SHA-256 of the request's headers and body.
        digest: String,
        /// The response, when one came.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<HttpAnswer>,
        /// The error the guest got instead of a response.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// One key-value call and its answer.
    Kv {
        /// The operation and its arguments.
        request: Value,
        /// `{"ok": …}` or `{"error": …}`.
        answer: Value,
    },
    /// One secret read, by name.
    Secret {
        /// The secret's name.
        name: String,
        /// Whether the guest got a value.
        found: bool,
    },
}

/// A recorded HTTP response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as read, base64.
    pub body: String,
    /// How reading the body ended early, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_error: Option<String>,
}

impl Call {
    /// Which stream of a replay answers it.
    fn stream(&self) -> usize {
        match self {
            Call::Wall { .. } => 0,
            Call::Monotonic { .. } => 1,
            _ => 2,
        }
    }

    /// What the call asked, as a divergence shows it.
    pub fn describe(&self) -> String {
        match self {
            Call::Wall { .. } => "wall clock".into(),
            Call::Monotonic { .. } => "monotonic clock".into(),
            // Neither the digest (it stands for headers and bodies) nor a
            // value written (key-value data is the admins') is shown.
            Call::Http { request, .. } => format!("http {request}"),
            Call::Kv { request, .. } => format!(
                "kv {} {}",
                request["op"].as_str().unwrap_or("?"),
                request["key"]
                    .as_str()
                    .or_else(|| request["prefix"].as_str())
                    .unwrap_or("")
            ),
            Call::Secret { name, .. } => format!("secret {name}"),
        }
    }

    /// Bytes the call takes in the journal, roughly.
    fn weight(&self) -> usize {
        match self {
            Call::Wall { .. } | Call::Monotonic { .. } => 32,
            Call::Http {
                request,
                digest,
                response,
                error,
            } => {
                64 + request.len()
                    + digest.len()
                    + error.as_ref().map_or(0, String::len)
                    + response.as_ref().map_or(0, |r| {
                        r.body.len()
                            + r.headers
                                .iter()
                                .map(|(k, v)| k.len() + v.len() + 8)
                                .sum::<usize>()
                    })
            }
            Call::Kv { request, answer } => {
                32 + request.to_string().len() + answer.to_string().len()
            }
            Call::Secret { name, .. } => 32 + name.len(),
        }
    }
}

/// Whether two results (or errors) are the same: an absent one and JSON
/// `null` are (a journal read back cannot tell them apart).
pub fn same_value(a: &Option<Value>, b: &Option<Value>) -> bool {
    a.as_ref().unwrap_or(&Value::Null) == b.as_ref().unwrap_or(&Value::Null)
}

/// Where a replay first asked for something its journal did not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Divergence {
    /// The position of the call, from 1, among the journal's calls.
    pub call: usize,
    /// What the journal holds there.
    pub expected: String,
    /// What the guest asked for.
    pub got: String,
}

/// How a run uses a journal.
#[derive(Debug, Clone, Default)]
pub enum JournalMode {
    /// Records nothing.
    #[default]
    Off,
    /// Records, keeping at most `cap` bytes of calls.
    Record {
        /// The cap in bytes.
        cap: usize,
    },
    /// Answers every host call from this journal.
    Replay(Arc<Journal>),
}

/// The journal of one run as it is written or read: shared by the clocks,
/// outbound HTTP, key-value store and secrets of its store.
#[derive(Clone)]
pub struct Tape(Arc<Mutex<Reel>>);

struct Reel {
    replay: bool,
    calls: Vec<Call>,
    bytes: usize,
    cap: usize,
    over: Option<String>,
    /// Replay: the next position to look from, per stream.
    cursor: [usize; 3],
    /// Replay: the last reading handed out, per clock.
    last_wall: (u64, u32),
    last_monotonic: u64,
    divergence: Option<Divergence>,
}

impl Tape {
    /// A tape recording up to `cap` bytes of calls.
    pub fn recording(cap: usize) -> Self {
        Self::new(false, Vec::new(), cap)
    }

    /// A tape answering from `journal`.
    pub fn replaying(journal: &Journal) -> Self {
        Self::new(true, journal.calls.clone(), usize::MAX)
    }

    fn new(replay: bool, calls: Vec<Call>, cap: usize) -> Self {
        Tape(Arc::new(Mutex::new(Reel {
            replay,
            calls,
            bytes: 0,
            cap,
            over: None,
            cursor: [0; 3],
            last_wall: (0, 0),
            last_monotonic: 0,
            divergence: None,
        })))
    }

    fn reel(&self) -> std::sync::MutexGuard<'_, Reel> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the tape answers calls instead of recording them.
    pub fn is_replay(&self) -> bool {
        self.reel().replay
    }

    /// Whether the recording passed its cap (and keeps nothing more).
    pub fn is_over(&self) -> bool {
        let reel = self.reel();
        reel.over.is_some() || reel.bytes > reel.cap
    }

    /// Records `call`; returns its index, or `None` once past the cap.
    pub fn record(&self, call: Call) -> Option<usize> {
        let mut reel = self.reel();
        if reel.over.is_some() {
            return None;
        }
        let weight = call.weight();
        if reel.bytes + weight > reel.cap {
            let cap = reel.cap;
            let at = reel.calls.len() + 1;
            reel.over = Some(format!(
                "its journal passed the cap of {cap} bytes at call {at}"
            ));
            reel.calls = Vec::new();
            return None;
        }
        reel.bytes += weight;
        reel.calls.push(call);
        Some(reel.calls.len() - 1)
    }

    /// Changes the recorded call at `index` (an HTTP response arriving in
    /// parts), counting the bytes it adds against the cap.
    pub fn amend(&self, index: usize, change: impl FnOnce(&mut Call)) {
        let mut reel = self.reel();
        if reel.over.is_some() {
            return;
        }
        let Some(call) = reel.calls.get_mut(index) else {
            return;
        };
        let before = call.weight();
        change(call);
        let grown = call.weight().saturating_sub(before);
        reel.bytes += grown;
        if reel.bytes > reel.cap {
            let cap = reel.cap;
            reel.over = Some(format!(
                "its journal passed the cap of {cap} bytes at call {}",
                index + 1
            ));
            reel.calls = Vec::new();
        }
    }

    /// The next recorded reading of the wall clock (the last one again
    /// once the journal holds no more).
    pub fn next_wall(&self) -> (u64, u32) {
        let mut reel = self.reel();
        match reel.take(0) {
            Some((_, Call::Wall { secs, nanos })) => {
                reel.last_wall = (secs, nanos);
                (secs, nanos)
            }
            _ => reel.last_wall,
        }
    }

    /// The next recorded reading of the monotonic clock (the last one
    /// again once the journal holds no more).
    pub fn next_monotonic(&self) -> u64 {
        let mut reel = self.reel();
        match reel.take(1) {
            Some((_, Call::Monotonic { ns })) => {
                reel.last_monotonic = ns;
                ns
            }
            _ => reel.last_monotonic,
        }
    }

    /// The recorded answer to `asked` when the journal's next call is the
    /// same request (`same` compares them); otherwise the divergence is
    /// noted (the first one is kept) and `None` returned. After a
    /// divergence every further call fails too: what the world would have
    /// answered is unknown.
    pub fn answer(&self, asked: &Call, same: impl Fn(&Call) -> bool) -> Option<Call> {
        let slot = self.claim();
        self.answer_at(slot, asked, same)
    }

    /// Takes the journal's next call (not a clock reading) for a call the
    /// guest just made, to be compared once the call is known whole
    /// ([`Tape::answer_at`]): the order is the guest's, whatever order
    /// their bodies finish in.
    pub fn claim(&self) -> Option<usize> {
        let mut reel = self.reel();
        let i = reel.peek(2);
        if let Some(i) = i {
            reel.cursor[2] = i + 1;
        }
        i
    }

    /// [`Tape::answer`] for the call at `slot`, claimed before.
    pub fn answer_at(
        &self,
        slot: Option<usize>,
        asked: &Call,
        same: impl Fn(&Call) -> bool,
    ) -> Option<Call> {
        let mut reel = self.reel();
        if reel.divergence.is_some() {
            return None;
        }
        match slot {
            Some(i) if same(&reel.calls[i]) => Some(reel.calls[i].clone()),
            Some(i) => {
                let expected = reel.calls[i].describe();
                reel.diverge(i + 1, expected, asked.describe());
                None
            }
            None => {
                let at = reel.calls.len() + 1;
                reel.diverge(at, "no further call".into(), asked.describe());
                None
            }
        }
    }

    /// Ends a replay: a journal still holding calls the guest never made
    /// diverges at the first of them.
    pub fn finish_replay(&self) -> Option<Divergence> {
        let mut reel = self.reel();
        if reel.divergence.is_none()
            && let Some(i) = reel.peek(2)
        {
            let expected = reel.calls[i].describe();
            reel.diverge(i + 1, expected, "the end of the run".into());
        }
        reel.divergence.clone()
    }

    /// Ends a recording: the calls, or why there are none.
    pub fn finish_record(&self) -> (Vec<Call>, Option<String>) {
        let mut reel = self.reel();
        (std::mem::take(&mut reel.calls), reel.over.take())
    }
}

impl Reel {
    /// The next call of `stream` at or after its cursor.
    fn peek(&self, stream: usize) -> Option<usize> {
        (self.cursor[stream]..self.calls.len()).find(|&i| self.calls[i].stream() == stream)
    }

    fn take(&mut self, stream: usize) -> Option<(usize, Call)> {
        let i = self.peek(stream)?;
        self.cursor[stream] = i + 1;
        Some((i, self.calls[i].clone()))
    }

    fn diverge(&mut self, call: usize, expected: String, got: String) {
        self.divergence.get_or_insert(Divergence {
            call,
            expected,
            got,
        });
    }
}

/// A journal of `calls` for a run of export `x` (tests).
#[cfg(test)]
pub(crate) fn of_calls(calls: Vec<Call>) -> Journal {
    Journal {
        format: FORMAT,
        action: "x".into(),
        component: String::new(),
        source: None,
        params: Value::Null,
        seed: String::new(),
        calls,
        status: "succeeded".into(),
        result: None,
        error: None,
        not_replayable: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str) -> Call {
        Call::Kv {
            request: serde_json::json!({"op": "get", "key": key}),
            answer: serde_json::json!({"ok": null}),
        }
    }

    #[test]
    fn a_replay_answers_in_order_and_names_the_first_divergence() {
        let tape = Tape::recording(DEFAULT_CAP);
        tape.record(Call::Wall { secs: 5, nanos: 1 });
        tape.record(kv("a"));
        tape.record(Call::Monotonic { ns: 7 });
        tape.record(kv("b"));
        let (calls, over) = tape.finish_record();
        assert_eq!(over, None);
        let journal = of_calls(calls);
        let replay = Tape::replaying(&journal);
        // Clocks come from their own streams, whatever the order of the rest.
        assert_eq!(replay.next_monotonic(), 7);
        assert_eq!(replay.next_wall(), (5, 1));
        assert_eq!(replay.next_wall(), (5, 1), "the last reading again");
        assert_eq!(replay.answer(&kv("a"), |c| *c == kv("a")), Some(kv("a")));
        assert_eq!(replay.answer(&kv("c"), |c| *c == kv("c")), None);
        assert_eq!(
            replay.answer(&kv("b"), |c| *c == kv("b")),
            None,
            "after a divergence"
        );
        let d = replay.finish_replay().unwrap();
        assert_eq!(d.call, 4);
        assert_eq!(d.expected, "kv get b");
        assert_eq!(d.got, "kv get c");
    }

    #[test]
    fn one_call_more_or_fewer_diverges() {
        let journal = of_calls(vec![kv("a")]);
        let fewer = Tape::replaying(&journal);
        let d = fewer.finish_replay().unwrap();
        assert_eq!((d.call, d.got.as_str()), (1, "the end of the run"));
        let more = Tape::replaying(&journal);
        assert!(more.answer(&kv("a"), |c| *c == kv("a")).is_some());
        assert!(more.answer(&kv("a"), |c| *c == kv("a")).is_none());
        let d = more.finish_replay().unwrap();
        assert_eq!((d.call, d.expected.as_str()), (2, "no further call"));
    }

    #[test]
    fn a_journal_past_its_cap_keeps_nothing_and_says_why() {
        let tape = Tape::recording(100);
        assert!(tape.record(kv("a")).is_some());
        for _ in 0..10 {
            tape.record(kv("a"));
        }
        let (calls, over) = tape.finish_record();
        assert!(calls.is_empty());
        assert!(over.unwrap().contains("cap of 100 bytes"));
    }
}
