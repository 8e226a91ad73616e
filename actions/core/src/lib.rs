//! Attune's core pack: `echo`, `noop`, `sleep`, `fail` and `http`.
// The generated export of `http` takes each flattened part of its five
// parameters as an argument.
#![allow(clippy::too_many_arguments)]

attune_sdk::generate!("core");

/// The longest `sleep` accepts, in seconds.
const MAX_SLEEP_SECONDS: f64 = 300.0;

struct Core;

impl Guest for Core {
    fn echo(message: String) -> String {
        println!("{message}");
        message
    }

    fn noop() {}

    fn sleep(seconds: f64) -> Result<f64, String> {
        if !(0.0..=MAX_SLEEP_SECONDS).contains(&seconds) {
            return Err(format!(
                "seconds must be between 0 and {MAX_SLEEP_SECONDS}, got {seconds}"
            ));
        }
        std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
        Ok(seconds)
    }

    fn fail(message: Option<String>) -> Result<(), Failure> {
        let message = message.unwrap_or_else(|| "failed on purpose".to_string());
        attune_sdk::log::error(&message);
        Err(Failure { code: 1, message })
    }

    fn http(
        url: String,
        method: Option<String>,
        headers: Option<Vec<(String, String)>>,
        body: Option<String>,
        timeout: Option<f64>,
    ) -> Result<Response, String> {
        let mut request = attune_sdk::http::Request::new(method.as_deref().unwrap_or("GET"), &url);
        request.headers = headers.unwrap_or_default();
        request.body = body.map(String::into_bytes);
        if let Some(seconds) = timeout {
            if !(seconds.is_finite() && seconds > 0.0) {
                return Err(format!(
                    "timeout must be a positive number of seconds, got {seconds}"
                ));
            }
            request.timeout = Some(std::time::Duration::from_secs_f64(seconds.min(3600.0)));
        }
        let response = request.send().map_err(|e| e.to_string())?;
        Ok(Response {
            status: response.status,
            body: response.text(),
            headers: response.headers,
        })
    }
}

export!(Core);
