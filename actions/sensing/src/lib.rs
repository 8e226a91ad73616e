//! Test guest with sensors: each export returns a list of records, one event
//! each.

attune_sdk::generate!("sensing");

struct Sensing;

fn issue(id: u32) -> Issue {
    Issue {
        id,
        title: format!("issue {id}"),
        labels: vec!["bug".into()],
    }
}

impl Guest for Sensing {
    fn scan() -> Vec<Issue> {
        let scans = attune_sdk::kv::increment("scans", 1).unwrap_or(1) as u32;
        vec![issue(2 * scans - 1), issue(2 * scans)]
    }

    fn broken() -> Result<Vec<Issue>, String> {
        Err("the tracker said 503".into())
    }

    fn crash() -> Vec<Issue> {
        panic!("the scanner crashed")
    }

    fn flood() -> Vec<Issue> {
        (1..=1500).map(issue).collect()
    }

    fn hello(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Sensing);
