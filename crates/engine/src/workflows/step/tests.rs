//! The step function driven alone, as the conductor drives it.

use super::*;

fn def(yaml: &str) -> Workflow {
    Workflow::parse(yaml).unwrap()
}

fn ok(_: &str, _: &Value) -> Result<(), String> {
    Ok(())
}

/// Records each start under a made-up child id, as the conductor does
/// with the ids the database assigns.
fn started(state: &mut State, step: &Step, next_id: &mut i64) -> Vec<(i64, String)> {
    step.starts
        .iter()
        .map(|s| {
            *next_id += 1;
            state.running.insert(*next_id, s.slot.clone());
            (*next_id, s.label())
        })
        .collect()
}

fn end(status: ExecutionStatus, result: Value) -> ChildEnd {
    ChildEnd {
        status,
        result: Some(result),
        error: (status != ExecutionStatus::Succeeded).then(|| json!("boom")),
    }
}

#[test]
fn items_run_at_most_concurrency_at_once_and_results_keep_item_order() {
    let wf = def(r#"
input: {type: object}
tasks:
  each:
    action: core.echo
    with_items: "{{ [10, 20, 30, 40] }}"
    concurrency: 2
    input: {message: "n{{ item }}"}
output: "{{ tasks.each.results }}"
"#);
    let input = json!({});
    let m = Machine {
        def: &wf,
        input: &input,
        secrets: &[],
        handed: &Default::default(),
        check: &ok,
    };
    let mut state = State::default();
    let mut ids = 0;
    let first = m.init(&mut state);
    let running = started(&mut state, &first, &mut ids);
    assert_eq!(
        running.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
        ["each[0]", "each[1]"]
    );
    assert_eq!(first.starts[1].params, json!({"message": "n20"}));
    // The second item ends first: one more starts, never three at once.
    let mut step = Step::default();
    m.child_ended(
        &mut state,
        running[1].0,
        end(ExecutionStatus::Succeeded, json!("b")),
        &mut step,
    );
    let third = started(&mut state, &step, &mut ids);
    assert_eq!(third[0].1, "each[2]");
    assert_eq!(state.running.len(), 2);
    let mut step = Step::default();
    m.child_ended(
        &mut state,
        running[0].0,
        end(ExecutionStatus::Succeeded, json!("a")),
        &mut step,
    );
    let fourth = started(&mut state, &step, &mut ids);
    assert_eq!(fourth[0].1, "each[3]");
    let mut step = Step::default();
    m.child_ended(
        &mut state,
        fourth[0].0,
        end(ExecutionStatus::Succeeded, json!("d")),
        &mut step,
    );
    m.child_ended(
        &mut state,
        third[0].0,
        end(ExecutionStatus::Succeeded, json!("c")),
        &mut step,
    );
    let done = step.end.expect("ended");
    assert_eq!(done.status, ExecutionStatus::Succeeded);
    assert_eq!(done.result, Some(json!(["a", "b", "c", "d"])));
}

#[test]
fn a_failed_task_retries_then_its_failure_transition_runs() {
    let wf = def(r#"
input: {type: object}
tasks:
  flaky:
    action: core.fail
    retry: {count: 1, delay: 2s}
    next: [{when: failed, publish: {why: "{{ error }}"}, do: [page]}]
  page: {action: core.echo, input: {message: "{{ vars.why }}"}}
"#);
    let input = json!({});
    let m = Machine {
        def: &wf,
        input: &input,
        secrets: &[],
        handed: &Default::default(),
        check: &ok,
    };
    let mut state = State::default();
    let mut ids = 0;
    let first = m.init(&mut state);
    let a = started(&mut state, &first, &mut ids);
    let mut step = Step::default();
    m.child_ended(
        &mut state,
        a[0].0,
        end(ExecutionStatus::Failed, Value::Null),
        &mut step,
    );
    assert_eq!(step.starts[0].slot.attempt, 2);
    assert_eq!(step.starts[0].delay_ms, 2000);
    let b = started(&mut state, &step, &mut ids);
    let mut step = Step::default();
    m.child_ended(
        &mut state,
        b[0].0,
        end(ExecutionStatus::Failed, Value::Null),
        &mut step,
    );
    assert_eq!(step.starts[0].slot.task, "page");
    assert_eq!(step.starts[0].params, json!({"message": "boom"}));
    assert!(step.end.is_none());
}

#[test]
fn a_runaway_loop_stops_at_the_run_limit_and_fails() {
    let wf = def(r#"
input: {type: object}
tasks:
  start: {action: core.echo, input: {message: go}, next: [{do: again}]}
  again:
    action: core.echo
    input: {message: x}
    next: [{when: "result == 'x'", do: again}]
"#);
    let input = json!({});
    let m = Machine {
        def: &wf,
        input: &input,
        secrets: &[],
        handed: &Default::default(),
        check: &ok,
    };
    let mut state = State::default();
    let mut ids = 0;
    let mut step = m.init(&mut state);
    loop {
        let running = started(&mut state, &step, &mut ids);
        assert!(!running.is_empty(), "{state:?} {step:?}");
        let mut next = Step::default();
        m.child_ended(
            &mut state,
            running[0].0,
            end(ExecutionStatus::Succeeded, json!("x")),
            &mut next,
        );
        if let Some(done) = next.end {
            assert_eq!(done.status, ExecutionStatus::Failed);
            assert!(done.error.unwrap().to_string().contains("task runs"));
            break;
        }
        step = next;
    }
    assert_eq!(state.runs, MAX_RUNS);
}

#[test]
fn input_that_does_not_fit_fails_the_task_without_a_child() {
    let wf = def(r#"
input: {type: object}
tasks:
  bad: {action: core.echo, input: {message: "{{ 5 }}"}}
"#);
    let input = json!({});
    let refuse = |_: &str, p: &Value| {
        if p["message"].is_string() {
            Ok(())
        } else {
            Err("message must be a string".to_string())
        }
    };
    let m = Machine {
        def: &wf,
        input: &input,
        secrets: &[],
        handed: &Default::default(),
        check: &refuse,
    };
    let mut state = State::default();
    let step = m.init(&mut state);
    assert!(step.starts.is_empty());
    let done = step.end.unwrap();
    assert_eq!(done.status, ExecutionStatus::Failed);
    assert_eq!(done.error, Some(json!("message must be a string")));
}
