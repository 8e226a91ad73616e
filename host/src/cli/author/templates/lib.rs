attune_sdk::generate!("{{name}}");

struct Pack;

impl Guest for Pack {
    fn greet(name: String, times: Option<u32>) -> Result<String, String> {
        let times = times.unwrap_or(1);
        if times > 10 {
            return Err(format!("times must be at most 10, got {times}"));
        }
        attune_sdk::log::info(&format!("greeting {name} {times} time(s)"));
        Ok(vec![format!("hello, {name}"); times as usize].join(", "))
    }
}

export!(Pack);
