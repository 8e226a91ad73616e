//! Attune's core pack: `echo`, `noop`, `sleep` and `fail`.

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
}

export!(Core);
