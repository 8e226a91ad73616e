//! `attune:action/kv` through a tape: each call and its answer recorded
//! while recording; while replaying, answered from the journal and never
//! written.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Call, Tape};
use crate::kv::{KvError, KvStore};
use crate::secrets::SecretSet;

/// A run's key-value store as the journal sees it.
pub struct JournaledKv {
    /// The real store (recording); `None` when the run has none.
    pub inner: Option<Arc<dyn KvStore>>,
    /// The run's tape.
    pub tape: Tape,
    /// The run's secrets, redacted from what is kept.
    pub secrets: Arc<SecretSet>,
}

fn unavailable() -> KvError {
    KvError::Unavailable("no key-value store in this run".into())
}

fn encode<T: Serialize>(answer: &Result<T, KvError>) -> Value {
    match answer {
        Ok(v) => json!({ "ok": v }),
        Err(KvError::TooLarge(m)) => json!({ "error": { "too_large": m } }),
        Err(KvError::NotAnInteger) => json!({ "error": "not_an_integer" }),
        Err(KvError::Unavailable(m)) => json!({ "error": { "unavailable": m } }),
    }
}

fn decode<T: DeserializeOwned>(answer: &Value) -> Result<T, KvError> {
    if let Some(ok) = answer.get("ok") {
        return serde_json::from_value(ok.clone())
            .map_err(|e| KvError::Unavailable(format!("replay: the journal's answer: {e}")));
    }
    let error = &answer["error"];
    Err(if error == "not_an_integer" {
        KvError::NotAnInteger
    } else if let Some(m) = error["too_large"].as_str() {
        KvError::TooLarge(m.into())
    } else {
        KvError::Unavailable(error["unavailable"].as_str().unwrap_or("").into())
    })
}

impl JournaledKv {
    /// The recorded answer to `request` while replaying (an error when the
    /// journal holds another call here); `None` while recording.
    fn replayed<T: DeserializeOwned>(&self, request: &Value) -> Option<Result<T, KvError>> {
        if !self.tape.is_replay() {
            return None;
        }
        let mut request = request.clone();
        self.secrets.redact_json(&mut request);
        let asked = Call::Kv {
            request: request.clone(),
            answer: Value::Null,
        };
        let same = |c: &Call| matches!(c, Call::Kv { request: r, .. } if *r == request);
        Some(match self.tape.answer(&asked, same) {
            Some(Call::Kv { answer, .. }) => decode(&answer),
            _ => Err(KvError::Unavailable(
                "replay: the journal holds another call here".into(),
            )),
        })
    }

    fn recorded<T: Serialize>(&self, mut request: Value, answer: &Result<T, KvError>) {
        let mut answer = encode(answer);
        self.secrets.redact_json(&mut request);
        self.secrets.redact_json(&mut answer);
        self.tape.record(Call::Kv { request, answer });
    }

    fn store(&self) -> Result<&Arc<dyn KvStore>, KvError> {
        self.inner.as_ref().ok_or_else(unavailable)
    }
}

/// One call: answered from the journal while replaying, else run against
/// the store and recorded.
macro_rules! journaled {
    ($self:ident, $request:expr, |$store:ident| $live:expr) => {{
        let request = $request;
        if let Some(answer) = $self.replayed(&request) {
            return answer;
        }
        let answer = match $self.store() {
            Ok($store) => $live.await,
            Err(e) => Err(e),
        };
        $self.recorded(request, &answer);
        answer
    }};
}

#[async_trait::async_trait]
impl KvStore for JournaledKv {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        journaled!(self, json!({"op": "get", "key": key}), |s| s.get(key))
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), KvError> {
        let ttl_ms = ttl.map(|t| t.as_millis() as u64);
        journaled!(
            self,
            json!({"op": "set", "key": key, "value": value, "ttl_ms": ttl_ms}),
            |s| s.set(key, value, ttl)
        )
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        journaled!(self, json!({"op": "delete", "key": key}), |s| s.delete(key))
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        journaled!(self, json!({"op": "list_keys", "prefix": prefix}), |s| s
            .list_keys(prefix))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        journaled!(
            self,
            json!({"op": "increment", "key": key, "delta": delta}),
            |s| s.increment(key, delta)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::of_calls;
    use crate::kv::MemoryKv;

    #[tokio::test]
    async fn a_replay_reads_the_recorded_answers_and_writes_nothing() {
        let memory: Arc<dyn KvStore> = Arc::new(MemoryKv::default());
        memory.set("n", "41", None).await.unwrap();
        let tape = Tape::recording(super::super::DEFAULT_CAP);
        let live = JournaledKv {
            inner: Some(memory.clone()),
            tape: tape.clone(),
            secrets: Arc::default(),
        };
        assert_eq!(live.increment("n", 1).await, Ok(42));
        assert_eq!(live.increment("word", 0).await, Ok(0));
        let (calls, _) = tape.finish_record();
        let journal = of_calls(calls);
        memory.set("n", "0", None).await.unwrap();
        let tape = Tape::replaying(&journal);
        let replay = JournaledKv {
            inner: None,
            tape: tape.clone(),
            secrets: Arc::default(),
        };
        assert_eq!(replay.increment("n", 1).await, Ok(42));
        assert!(matches!(
            replay.get("other").await,
            Err(KvError::Unavailable(_))
        ));
        assert_eq!(
            memory.get("n").await,
            Ok(Some("0".into())),
            "nothing written"
        );
        assert_eq!(tape.finish_replay().unwrap().call, 2);
    }
}
