//! People in the loop: answering a workflow's `ask` tasks, resuming its
//! `wait` tasks on a matching event, and timing both out.
//!
//! An `ask` or `wait` task is a child execution in status `pending` with an
//! inquiry row beside it (see [`crate::workflows::pause`]). Whatever ends it
//! — an answer, an event, the deadline, a cancel — ends it only while it is
//! `pending`, in one transaction with the inquiry's end, so it ends once
//! across nodes; the workflow's conductor then takes the end in like any
//! child's. Everything is in the database, so a waiting workflow survives a
//! restart.

use serde_json::{Value, json};

use crate::rules::render::to_template;
use crate::workflows::pause::{OnTimeout, Spec};
use crate::{Core, EngineError};
use attune_storage::{ExecutionStatus, InquiryEnd, InquiryRecord, Role, now_ms};

/// The trigger type of the event an `ask` emits when it opens.
pub const OPENED_TRIGGER: &str = "core.inquiry_opened";
/// The trigger type of the event an answer emits.
pub const ANSWERED_TRIGGER: &str = "core.inquiry_answered";
/// How old an event must be before a wait moves past it (see [`resume`]).
const SETTLE_MS: i64 = 2_000;
/// Events a wait looks at in one pass.
const EVENTS_PER_PASS: i64 = 100;
/// Waits one pass looks at (those with events they have not seen, the one
/// that looked longest ago first).
const WAITS_PER_PASS: i64 = 50;
/// The largest answer, in bytes of JSON.
pub const MAX_ANSWER: usize = 64 * 1024;
/// Open asks read to list those a caller may answer, oldest first.
pub const MAX_LISTED: i64 = 1_000;
/// What resume URLs are signed for (see [`crate::secrets::SecretsKey::sign`]).
const RESUME: &str = "inquiry resume URL";
/// How long a resume URL lasts when its ask has no timeout.
pub const RESUME_TTL_MS: i64 = 24 * 3_600_000;
/// The longest a resume URL lasts, whatever its ask's timeout.
pub const RESUME_MAX_MS: i64 = 7 * 24 * 3_600_000;

/// The resume URL of ask `i` (a path under the server's address), when its
/// ask allows one: signed over the inquiry's id and the URL's expiry (its
/// deadline, at most a week after it opened, or a day after it opened when
/// it has none), good until then and only while the inquiry is open (so
/// once).
pub fn resume_url(core: &Core, i: &InquiryRecord) -> Option<String> {
    if i.kind != "ask" || !spec(i).resume_url {
        return None;
    }
    let expires = i.deadline.map_or(i.created_at + RESUME_TTL_MS, |d| {
        d.min(i.created_at + RESUME_MAX_MS)
    });
    let tag = core
        .secrets
        .sign(RESUME, format!("{}.{expires}", i.id).as_bytes());
    Some(format!(
        "/ui/respond/{}?expires={expires}&sig={}",
        i.id,
        hex::encode(tag)
    ))
}

/// Checks a resume URL's `expires` and `sig` for inquiry `id`: the reason
/// when it is not good (forged, or expired).
pub fn check_resume(core: &Core, id: i64, expires: i64, sig: &str) -> Result<(), EngineError> {
    let tag = hex::decode(sig).unwrap_or_default();
    if !core
        .secrets
        .verify(RESUME, format!("{id}.{expires}").as_bytes(), &tag)
    {
        return Err(EngineError::Denied("this link is not valid".into()));
    }
    if now_ms() > expires {
        return Err(EngineError::Denied("this link has expired".into()));
    }
    Ok(())
}

/// Who answers.
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    /// A token, by id, name and role.
    Token {
        /// Its id.
        id: i64,
        /// Its name.
        name: &'a str,
        /// Its role.
        role: Role,
    },
    /// Someone holding a valid resume URL.
    ResumeUrl,
}

impl By<'_> {
    fn name(&self) -> &str {
        match self {
            By::Token { name, .. } => name,
            By::ResumeUrl => "resume URL",
        }
    }

    fn id(&self) -> Option<i64> {
        match self {
            By::Token { id, .. } => Some(*id),
            By::ResumeUrl => None,
        }
    }
}

/// What an inquiry's stored spec says.
pub fn spec(i: &InquiryRecord) -> Spec {
    // A spec that does not read back admits nobody (no approvers, no
    // self-approval) and waits for nothing.
    serde_json::from_value(i.spec.clone()).unwrap_or_else(|_| Spec {
        kind: i.kind.clone(),
        ..Spec::default()
    })
}

/// Why `by` may not answer `i`, if it may not.
pub fn refusal(i: &InquiryRecord, spec: &Spec, by: By<'_>) -> Option<String> {
    let By::Token { id, name, role } = by else {
        return None;
    };
    let Some(approvers) = &spec.approvers else {
        return Some(format!("inquiry {} takes no answer", i.id));
    };
    if !approvers.admit(name, role) {
        let mut who: Vec<String> = approvers
            .roles
            .iter()
            .map(|r| format!("role {r}"))
            .collect();
        who.extend(approvers.tokens.iter().map(|t| format!("token `{t}`")));
        return Some(format!(
            "inquiry {} may be answered only by {}",
            i.id,
            who.join(" or ")
        ));
    }
    if !spec.self_approval && (i.requested_by == Some(id) || i.rule_by == Some(id)) {
        return Some(format!(
            "inquiry {} may not be answered by the token that started its workflow",
            i.id
        ));
    }
    None
}

/// Open `ask` inquiries `by` may answer, oldest first.
pub async fn list(core: &Core, by: By<'_>) -> Result<Vec<InquiryRecord>, EngineError> {
    let open = core.storage.open_inquiries("ask", MAX_LISTED).await?;
    Ok(open
        .into_iter()
        .filter(|i| refusal(i, &spec(i), by).is_none())
        .collect())
}

/// Every inquiry of workflow execution `workflow`, oldest first.
pub async fn of_workflow(core: &Core, workflow: i64) -> Result<Vec<InquiryRecord>, EngineError> {
    Ok(core.storage.inquiries_of(workflow).await?)
}

/// The ids of the open asks, oldest first (at most [`MAX_LISTED`]).
pub async fn open_asks(core: &Core) -> Result<Vec<i64>, EngineError> {
    let open = core.storage.open_inquiries("ask", MAX_LISTED).await?;
    Ok(open.into_iter().map(|i| i.id).collect())
}

/// Records token `token` as the last to save rule `rule`: what the rule
/// starts is its doing too (see [`refusal`]).
pub async fn rule_saved(core: &Core, rule: &str, token: i64) -> Result<(), EngineError> {
    Ok(core.storage.set_rule_author(rule, token).await?)
}

/// One inquiry.
pub async fn get(core: &Core, id: i64) -> Result<InquiryRecord, EngineError> {
    core.storage
        .get_inquiry(id)
        .await?
        .ok_or_else(|| EngineError::not_found("inquiry", id))
}

/// Why an inquiry that is not open cannot be answered.
fn closed(i: &InquiryRecord) -> EngineError {
    let when = i
        .answered_at
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            format!(
                " at {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .unwrap_or_default();
    EngineError::Conflict(match i.state.as_str() {
        "answered" => format!(
            "inquiry {} was already answered by {}{when}",
            i.id,
            i.answered_by.as_deref().unwrap_or("someone")
        ),
        "timed_out" => format!("inquiry {} timed out{when}", i.id),
        // Still open, yet it could not be ended: its deadline passed.
        "open" => format!("inquiry {} timed out", i.id),
        _ => format!(
            "inquiry {} was closed: its workflow was cancelled{when}",
            i.id
        ),
    })
}

/// Answers `ask` inquiry `id` with `answer`: refused when `by` may not
/// answer it (denied), when it is no longer open (a conflict, naming who
/// answered) or when the answer does not fit its schema (invalid, with
/// paths). The answer, with `answered_by` and `answered_at`, becomes the
/// task's result.
pub async fn respond(
    core: &Core,
    id: i64,
    answer: Value,
    by: By<'_>,
) -> Result<InquiryRecord, EngineError> {
    let i = get(core, id).await?;
    if i.kind != "ask" {
        return Err(EngineError::Conflict(format!(
            "inquiry {id} waits for an event; only an `ask` is answered"
        )));
    }
    let spec = spec(&i);
    if let Some(why) = refusal(&i, &spec, by) {
        return Err(EngineError::Denied(why));
    }
    if i.state != "open" {
        return Err(closed(&i));
    }
    if i.deadline.is_some_and(|d| d <= now_ms()) {
        return Err(EngineError::Conflict(format!("inquiry {id} timed out")));
    }
    if answer.to_string().len() > MAX_ANSWER {
        return Err(EngineError::invalid(
            "the answer is too large",
            "",
            vec![attune_runtime::PathError::new(
                "",
                format!("at most {MAX_ANSWER} bytes of JSON"),
            )],
        ));
    }
    let schema = spec
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object"}));
    let errors = attune_runtime::schema_errors(&schema, &answer);
    if !errors.is_empty() {
        return Err(EngineError::invalid(
            "the answer does not fit the inquiry's schema",
            "",
            errors,
        ));
    }
    if let Some(name) = crate::workflows::pause::RESERVED
        .iter()
        .find(|name| answer.get(**name).is_some())
    {
        return Err(EngineError::invalid(
            "the answer does not fit the inquiry's schema",
            "",
            vec![attune_runtime::PathError::new(
                format!("/{name}"),
                "set by the task's result, not by an answer",
            )],
        ));
    }
    let Value::Object(mut result) = answer else {
        return Err(EngineError::invalid(
            "the answer does not fit the inquiry's schema",
            "",
            vec![attune_runtime::PathError::new("", "expected an object")],
        ));
    };
    let now = now_ms();
    result.insert("answered_by".into(), json!(by.name()));
    result.insert("answered_at".into(), json!(now));
    let result = Value::Object(result);
    let end = InquiryEnd {
        state: "answered",
        by: Some(by.name()),
        status: ExecutionStatus::Succeeded,
        result: Some(&result),
        error: None,
        at: None,
    };
    if !core.storage.end_inquiry(id, &end).await? {
        return Err(closed(&get(core, id).await?));
    }
    ended(core, id).await;
    let i = get(core, id).await?;
    let depth = core.storage.get_execution(id).await?.map_or(0, |e| e.depth);
    emit(
        core,
        ANSWERED_TRIGGER,
        json!({"inquiry": i.id, "execution": i.workflow, "task": i.task,
               "answered_by": i.answered_by, "answer": result}),
        depth,
        // What an answer causes is the answerer's doing (through a link,
        // whoever started the workflow's).
        by.id().or(i.requested_by),
    )
    .await;
    Ok(i)
}

/// After an inquiry's execution ended: its workflow takes the end in, and
/// its end is announced.
async fn ended(core: &Core, id: i64) {
    core.dispatch.finished.notify_one();
    crate::executions::announce(core, &[id]).await;
}

/// Emits an event of `trigger` through the event door when a rule
/// listens; `depth`: its task's (what it causes is one deeper, so a rule
/// whose workflow asks again stops at the chain's bound).
async fn emit(core: &Core, trigger: &str, payload: Value, depth: i64, requested_by: Option<i64>) {
    let listening = core.cache.enabled_rules(&core.storage, trigger).await;
    if !matches!(&listening, Ok(rules) if !rules.is_empty()) {
        return;
    }
    let event = crate::ingest::IncomingEvent {
        trigger: trigger.into(),
        payload,
        source: Some("core.ask".into()),
        rules: None,
        depth: depth + 1,
        trace: None,
        requested_by,
    };
    if let Err(e) = core.ingest.event(core, event).await
        && !e.is_refused()
    {
        tracing::error!(error = %e, trigger, "emitting an inquiry's event");
    }
}

/// Announces asks that just opened (`(id, depth)`): a
/// `core.inquiry_opened` event each.
pub async fn opened(core: &Core, asks: &[(i64, i64)]) {
    for (id, depth) in asks {
        let Ok(Some(i)) = core.storage.get_inquiry(*id).await else {
            continue;
        };
        if i.kind != "ask" {
            continue;
        }
        let spec = spec(&i);
        let mut payload = json!({"inquiry": i.id, "execution": i.workflow, "task": i.task,
                                 "prompt": spec.prompt, "schema": spec.schema, "deadline": i.deadline});
        if let Some(url) = resume_url(core, &i) {
            payload["resume_url"] = json!(url);
        }
        emit(core, OPENED_TRIGGER, payload, *depth, i.requested_by).await;
    }
}

/// One pass over open inquiries: times out those past their deadline and
/// resumes waits a matching event arrived for. Returns how many it ended.
pub async fn tick(core: &Core) -> Result<usize, EngineError> {
    let mut ended_now = Vec::new();
    // Waits first: an event that came before the deadline still counts.
    for i in core.storage.waits_with_news(WAITS_PER_PASS).await? {
        if resume(core, &i, &spec(&i)).await? {
            ended_now.push(i.id);
        }
    }
    for i in core.storage.inquiries_due(now_ms()).await? {
        if time_out(core, &i, &spec(&i)).await? {
            ended_now.push(i.id);
        }
    }
    for id in &ended_now {
        ended(core, *id).await;
    }
    Ok(ended_now.len())
}

async fn time_out(core: &Core, i: &InquiryRecord, spec: &Spec) -> Result<bool, EngineError> {
    let what = if i.kind == "ask" {
        "no answer"
    } else {
        "no matching event"
    };
    let (status, result, error) = match spec.on_timeout {
        OnTimeout::Fail => (
            ExecutionStatus::TimedOut,
            None,
            Some(json!(format!(
                "{what} within {}",
                attune_util::units::format_duration_ms(spec.timeout_ms.unwrap_or(0))
            ))),
        ),
        OnTimeout::Continue => (
            ExecutionStatus::Succeeded,
            Some(json!({"timed_out": true})),
            None,
        ),
    };
    let end = InquiryEnd {
        state: "timed_out",
        by: None,
        status,
        result: result.as_ref(),
        error: error.as_ref(),
        at: None,
    };
    Ok(core.storage.end_inquiry(i.id, &end).await?)
}

/// Resumes wait `i` with the first event after it started that matches its
/// criteria, if one arrived.
async fn resume(core: &Core, i: &InquiryRecord, spec: &Spec) -> Result<bool, EngineError> {
    let Some(trigger) = &i.trigger else {
        return Ok(false);
    };
    let events = core
        .storage
        .events_after(trigger, i.after_event, EVENTS_PER_PASS)
        .await?;
    if events.is_empty() {
        return Ok(false);
    }
    // Ids are handed out before commit, so on PostgreSQL an event with a
    // lower id can become visible after a higher one was read: a wait moves
    // past an event only once it is old enough for any lower id to be
    // visible, and reads the younger ones again next pass.
    let settled = now_ms() - SETTLE_MS;
    let looked = events
        .iter()
        .take_while(|e| e.created_at <= settled)
        .last()
        .map(|e| e.id);
    let context = spec.context.clone().unwrap_or_default();
    let input = to_template(context.get("input").unwrap_or(&Value::Null));
    let vars = to_template(context.get("vars").unwrap_or(&Value::Null));
    // Compiled once for the events this pass looks at.
    let env = crate::rules::template_env();
    let criteria = match spec.criteria.as_deref().filter(|c| !c.trim().is_empty()) {
        Some(c) => match env.compile_expression(c) {
            Ok(expr) => Some(expr),
            // Checked at upload; a stored one that no longer parses matches nothing.
            Err(_) => return Ok(false),
        },
        None => None,
    };
    for e in &events {
        let ctx = minijinja::context! {
            event => minijinja::context! {
                id => e.id,
                trigger => e.trigger.clone(),
                payload => to_template(&e.payload),
                source => e.source.clone(),
                created_at => e.created_at,
            },
            input => input.clone(),
            vars => vars.clone(),
        };
        // An expression that cannot be evaluated on this event (a missing
        // field) does not match it.
        let matched = criteria
            .as_ref()
            .is_none_or(|c| c.eval(&ctx).is_ok_and(|v| v.is_true()));
        if !matched {
            continue;
        }
        let result = json!({"id": e.id, "trigger": e.trigger, "payload": e.payload,
                            "source": e.source, "created_at": e.created_at});
        let by = format!("event {}", e.id);
        let end = InquiryEnd {
            state: "answered",
            by: Some(&by),
            status: ExecutionStatus::Succeeded,
            result: Some(&result),
            error: None,
            // It counts if it came before the deadline, however late this
            // pass reads it.
            at: Some(e.created_at),
        };
        return Ok(core.storage.end_inquiry(i.id, &end).await?);
    }
    if let Some(looked) = looked {
        core.storage.wait_looked(i.id, looked).await?;
    }
    Ok(false)
}
