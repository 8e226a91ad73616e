//! `attune:action/secrets`: the secrets a run may read, and the redaction of
//! every one of them from what the run leaves behind.
//!
//! A run gets a [`SecretSet`]: the names its pack is granted and the values
//! the host resolved for it (the granted ones that are set, and those its
//! rule's `{{ secrets.NAME }}` templates used). `get` answers `denied` for a
//! name outside the grant and `not-found` for a granted name with no value.
//! Every value in the set is replaced by [`MASK`] in the run's stdout,
//! stderr, log lines, result and error before the outcome leaves the
//! runtime, whether or not the guest read it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;
use wasmtime::component::{HasSelf, Linker};
use zeroize::Zeroizing;

use super::bindings::attune::action::secrets;
use super::output::{CappedPipe, Captured};

/// The capability string a worker advertises for it.
pub const CAPABILITY: &str = "attune:action/secrets@0.1.0";

/// What stands where a secret's value was.
pub const MASK: &str = "********";

/// The secrets one run may read, and so must redact.
#[derive(Default, Clone)]
pub struct SecretSet {
    granted: BTreeSet<String>,
    values: BTreeMap<String, Zeroizing<String>>,
}

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a value never reaches a log line through Debug.
        f.debug_struct("SecretSet")
            .field("granted", &self.granted)
            .field("values", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretSet {
    /// A set granting `granted` with the resolved `values` (which may hold
    /// names outside the grant: values a template used, redacted only).
    pub fn new(
        granted: impl IntoIterator<Item = String>,
        values: impl IntoIterator<Item = (String, Zeroizing<String>)>,
    ) -> Self {
        Self {
            granted: granted.into_iter().collect(),
            values: values.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        }
    }

    /// Whether there is nothing to read or redact.
    pub fn is_empty(&self) -> bool {
        self.granted.is_empty() && self.values.is_empty()
    }

    /// The granted names.
    pub fn granted(&self) -> impl Iterator<Item = &str> {
        self.granted.iter().map(String::as_str)
    }

    /// The resolved values by name.
    pub fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// What `secrets.get(name)` answers.
    pub fn get(&self, name: &str) -> Result<&str, secrets::Error> {
        if !self.granted.contains(name) {
            return Err(secrets::Error::Denied);
        }
        self.values
            .get(name)
            .map(|v| v.as_str())
            .ok_or(secrets::Error::NotFound)
    }

    /// How many trailing bytes of a growing text may be the start of a
    /// value, so a live stream holds them back until more arrives.
    pub fn hold_back(&self) -> usize {
        self.values
            .values()
            .map(|v| v.len().saturating_sub(1))
            .max()
            .unwrap_or(0)
    }

    /// `text` (a URL) with every value masked, as it is and in the
    /// percent-encoded forms a URL or a form body carries it in.
    pub fn redact_url<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = self.redact(text);
        for v in self.values.values() {
            for encoded in [
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                    .to_string(),
                percent_encoding::utf8_percent_encode(v, URL_SAFE).to_string(),
            ] {
                if encoded.as_str() != v.as_str() && out.contains(encoded.as_str()) {
                    out = Cow::Owned(out.replace(encoded.as_str(), MASK));
                }
            }
        }
        out
    }

    /// Whether `text` holds a piece of a value: any run of four bytes
    /// (or all of a shorter `text`) that also occurs in one. For text the
    /// host derives from a value by cutting it (a URL's host), which
    /// exact-value redaction cannot recognise.
    pub fn shares_piece(&self, text: &str) -> bool {
        if self.values.is_empty() || text.is_empty() {
            return false;
        }
        let n = text.len().min(4);
        self.values.values().any(|v| {
            text.as_bytes()
                .windows(n)
                .any(|w| v.as_bytes().windows(n).any(|x| x == w))
        })
    }

    /// `text` with every value replaced by [`MASK`], longest value first so
    /// a value containing another is masked whole.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.values.is_empty() || !self.values.values().any(|v| text.contains(v.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut ordered: Vec<&str> = self.values.values().map(|v| v.as_str()).collect();
        ordered.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut out = text.to_string();
        for v in ordered {
            if out.contains(v) {
                out = out.replace(v, MASK);
            }
        }
        Cow::Owned(out)
    }

    /// The first `limit` bytes of `bytes` as they are shown: every value
    /// that starts before `limit` replaced by [`MASK`] whole (even when it
    /// runs past `limit`), the rest cut at `limit`. Redact first, then cut:
    /// a cut through a value never leaves its first bytes in the clear.
    pub fn redact_prefix(&self, bytes: &[u8], limit: usize) -> Vec<u8> {
        let end = bytes.len().min(limit);
        if self.values.is_empty() {
            return bytes[..end].to_vec();
        }
        let mut ordered: Vec<&[u8]> = self.values.values().map(|v| v.as_bytes()).collect();
        ordered.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut out = Vec::with_capacity(end);
        let mut at = 0;
        while at < end {
            match ordered.iter().find(|v| bytes[at..].starts_with(v)) {
                Some(v) => {
                    out.extend_from_slice(MASK.as_bytes());
                    at += v.len();
                }
                None => {
                    out.push(bytes[at]);
                    at += 1;
                }
            }
        }
        out
    }

    /// What `pipe` captured, redacted and then cut at its cap. The pipe
    /// must hold [`Self::hold_back`] bytes past its cap for a value the cap
    /// cuts through to be masked whole.
    pub fn capture(&self, pipe: &CappedPipe) -> Captured {
        let (held, written) = pipe.raw();
        let shown = self.redact_prefix(&held, pipe.cap());
        Captured {
            text: String::from_utf8_lossy(&shown).into_owned(),
            dropped: written.saturating_sub(pipe.cap() as u64),
            count_shown: self.values.is_empty(),
        }
    }

    /// A pipe of `cap` bytes that holds enough past its cap for
    /// [`Self::capture`].
    pub fn pipe(&self, cap: usize) -> CappedPipe {
        CappedPipe::with_slack(cap, self.hold_back())
    }

    /// Redacts every string (and object key) inside `value`.
    pub fn redact_json(&self, value: &mut Value) {
        if self.values.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.redact_json(&mut v);
                    map.insert(self.redact(&k).into_owned(), v);
                }
            }
            _ => {}
        }
    }
}

/// A live view of a running execution's output with its secrets redacted.
#[derive(Debug, Clone)]
pub struct LiveOutput {
    /// Its stdout as written so far.
    pub stdout: CappedPipe,
    /// Its stderr as written so far.
    pub stderr: CappedPipe,
    /// What to redact from both.
    pub secrets: Arc<SecretSet>,
}

impl LiveOutput {
    /// The redacted text of `pipe` past the first `sent` bytes of redacted
    /// text, and the new count. The tail that may still become a secret (or
    /// is an incomplete UTF-8 sequence) is held back until more arrives.
    pub fn since(&self, pipe: &CappedPipe, sent: usize) -> (String, usize) {
        let bytes = pipe.since(0);
        let complete = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => bytes.len(),
        };
        let shown = self.secrets.redact_prefix(&bytes[..complete], pipe.cap());
        let redacted = String::from_utf8_lossy(&shown);
        // While the pipe can still grow, its tail may become a secret.
        let hold = if pipe.may_grow() {
            self.secrets.hold_back()
        } else {
            0
        };
        let mut end = redacted.len().saturating_sub(hold);
        while !redacted.is_char_boundary(end) {
            end -= 1;
        }
        match redacted.get(sent..end) {
            Some(new) if end > sent => (new.to_string(), end),
            _ => (String::new(), sent),
        }
    }
}

/// What a URL encoder leaves as it is: letters, digits and `-._~`.
const URL_SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One run's view of its secrets, and its journal: a read is recorded by
/// name (never its value); a replay reads the current value through the
/// same grant, once the journal holds a read of that name there.
#[derive(Default)]
pub struct SecretsState(
    pub Arc<SecretSet>,
    pub Option<crate::journal::Tape>,
    pub Option<crate::calls::Calls>,
);

impl secrets::Host for SecretsState {
    fn get(&mut self, name: String) -> Result<String, secrets::Error> {
        let began = std::time::Instant::now();
        let got = self.0.get(&name).map(str::to_string);
        if let Some(calls) = &self.2 {
            calls.count(|c| &mut c.secrets);
            // A guest may pass anything as a name (a value, a piece of
            // one): the span names only a granted name.
            let kept = if got != Err(secrets::Error::Denied) {
                self.0.redact(&name).into_owned()
            } else {
                "(not granted)".to_string()
            };
            let error = got.as_ref().err().map(|e| {
                match e {
                    secrets::Error::Denied => "denied",
                    secrets::Error::NotFound => "not_found",
                }
                .to_string()
            });
            let attributes = vec![("attune.secret.name".into(), kept.clone())];
            calls.span("secret", format!("secret {kept}"), began, attributes, error);
        }
        if let Some(tape) = &self.1 {
            // A guest may pass anything as a name, a value too.
            let kept = self.0.redact(&name).into_owned();
            let asked = crate::journal::Call::Secret {
                name: kept.clone(),
                found: got.is_ok(),
            };
            if tape.is_replay() {
                let same = |c: &crate::journal::Call| matches!(c, crate::journal::Call::Secret { name: n, .. } if *n == kept);
                if tape.answer(&asked, same).is_none() {
                    return Err(secrets::Error::NotFound);
                }
            } else {
                tape.record(asked);
            }
        }
        got
    }
}

/// Links `attune:action/secrets` to the set `get` finds in a store.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut SecretsState,
) -> wasmtime::Result<()> {
    secrets::add_to_linker::<T, HasSelf<SecretsState>>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> SecretSet {
        SecretSet::new(
            ["token".to_string(), "unset".to_string()],
            [
                ("token".to_string(), Zeroizing::new("s3cret".to_string())),
                ("long".to_string(), Zeroizing::new("s3cret-and-more".into())),
            ],
        )
    }

    #[test]
    fn get_answers_denied_outside_the_grant_and_not_found_when_unset() {
        let s = set();
        assert_eq!(s.get("token"), Ok("s3cret"));
        assert_eq!(s.get("unset"), Err(secrets::Error::NotFound));
        assert_eq!(s.get("long"), Err(secrets::Error::Denied), "not granted");
        assert_eq!(s.get("other"), Err(secrets::Error::Denied));
    }

    #[test]
    fn every_value_is_masked_in_text_and_json_longest_first() {
        let s = set();
        assert_eq!(
            s.redact("a s3cret-and-more b s3cret"),
            "a ******** b ********"
        );
        assert!(matches!(s.redact("nothing here"), Cow::Borrowed(_)));
        let mut v = serde_json::json!({"k": ["x s3cret", 1], "s3cret": null});
        s.redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"k": ["x ********", 1], "********": null})
        );
        assert_eq!(s.hold_back(), "s3cret-and-more".len() - 1);
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "Debug shows names only"
        );
    }

    #[test]
    fn pieces_of_a_value_are_recognised() {
        let s = SecretSet::new(
            [],
            [("k".into(), Zeroizing::new("wJalrXUtnFEMI/K7MDENG".into()))],
        );
        assert!(s.shares_piece("wJalrXUtnFEMI"), "the host part of a URL");
        assert!(s.shares_piece("K7MDENG"));
        assert!(s.shares_piece("wJ"), "a short text inside a value");
        assert!(!s.shares_piece("api.example.com"));
        assert!(!SecretSet::default().shares_piece("anything"));
    }

    #[test]
    fn a_secret_cut_by_the_cap_is_masked_whole_and_nothing_past_the_cap_shows() {
        use wasmtime_wasi::p2::OutputStream;
        let s = set();
        for cap in 0..40 {
            let mut pipe = s.pipe(cap);
            pipe.write(bytes::Bytes::from_static(
                b"0123456789s3cret-and-more tail s3",
            ))
            .unwrap();
            pipe.write(bytes::Bytes::from_static(b"cret end")).unwrap();
            let got = s.capture(&pipe);
            for n in 2..=6 {
                for w in b"s3cret".windows(n).take(1) {
                    assert!(
                        !got.text.as_bytes().windows(n).any(|x| x == w),
                        "cap {cap}: {:?}",
                        got.text
                    );
                }
            }
            let plain = "0123456789";
            assert!(
                got.text.starts_with(&plain[..cap.min(10)]),
                "cap {cap}: {:?}",
                got.text
            );
            if cap > 10 {
                assert!(got.text.contains(MASK), "cap {cap}: {:?}", got.text);
            }
            assert_eq!(got.dropped, (41u64).saturating_sub(cap as u64));
        }
    }

    #[test]
    fn live_output_never_shows_a_secret_written_in_pieces() {
        use wasmtime_wasi::p2::OutputStream;
        let mut out = CappedPipe::new(1 << 20);
        let live = LiveOutput {
            stdout: out.clone(),
            stderr: CappedPipe::new(10),
            secrets: Arc::new(SecretSet::new(
                [],
                [("t".into(), Zeroizing::new("s3cret".into()))],
            )),
        };
        let mut shown = String::new();
        let mut sent = 0;
        for piece in ["token: s3", "cr", "et é", "\n"] {
            out.write(bytes::Bytes::copy_from_slice(piece.as_bytes()))
                .unwrap();
            let (new, n) = live.since(&live.stdout, sent);
            assert!(!new.contains("s3"), "{new:?}");
            shown.push_str(&new);
            sent = n;
        }
        // The tail that might still become a secret waits for the record.
        let whole = "token: ******** é\n";
        assert!(
            whole.starts_with(&shown) && shown.len() >= "token: ".len(),
            "{shown:?}"
        );
        assert_eq!(sent, shown.len());
        let mut pipe = CappedPipe::new(100);
        pipe.write(bytes::Bytes::from_static(&[b'a', 0xc3]))
            .unwrap();
        assert_eq!(
            live.since(&pipe, 0),
            ("".into(), 0),
            "half a character waits"
        );
    }

    #[test]
    fn a_url_masks_a_value_percent_encoded_too() {
        let set = SecretSet::new(
            ["t".to_string()],
            [("t".to_string(), Zeroizing::new("a+b/c=".to_string()))],
        );
        for url in [
            "http://h/x?t=a+b/c=",
            "http://h/x?t=a%2Bb%2Fc%3D",
            "http://h/x?t=a%2Bb%2Fc%3D&u=1",
        ] {
            let shown = set.redact_url(url);
            assert!(shown.contains(MASK), "{url}: {shown}");
            assert!(!shown.contains("b%2F") && !shown.contains("b/c"), "{shown}");
        }
    }

    #[test]
    fn a_journal_keeps_a_secret_read_by_name_never_a_value_passed_as_one() {
        use crate::bindings::attune::action::secrets::Host as _;
        let tape = crate::journal::Tape::recording(crate::journal::DEFAULT_CAP);
        let mut state = SecretsState(Arc::new(set()), Some(tape.clone()), None);
        assert!(state.get("token".into()).is_ok());
        assert!(state.get("s3cret".into()).is_err());
        let (calls, _) = tape.finish_record();
        let names: Vec<String> = calls
            .iter()
            .map(|c| match c {
                crate::journal::Call::Secret { name, .. } => name.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["token", MASK]);
    }

    #[test]
    fn a_span_names_only_a_granted_secret_never_a_piece_of_a_value() {
        use crate::bindings::attune::action::secrets::Host as _;
        let calls = crate::calls::Calls::new(std::time::Instant::now());
        let mut state = SecretsState(Arc::new(set()), None, Some(calls.clone()));
        assert!(state.get("token".into()).is_ok());
        assert!(state.get("unset".into()).is_err());
        // Pieces of a value, passed as names: refused, and not kept.
        assert!(state.get("s3cr".into()).is_err());
        assert!(state.get("and-more".into()).is_err());
        let (counts, _, _, spans) = calls.finish();
        assert_eq!(counts.secrets, 4);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "secret token",
                "secret unset",
                "secret (not granted)",
                "secret (not granted)"
            ]
        );
        assert_eq!(spans[1].error.as_deref(), Some("not_found"));
        assert_eq!(spans[2].error.as_deref(), Some("denied"));
    }
}
