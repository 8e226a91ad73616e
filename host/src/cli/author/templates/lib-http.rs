attune_sdk::generate!("{{name}}");

use attune_sdk::http::Request;

struct Pack;

impl Guest for Pack {
    fn fetch(url: String) -> Result<String, String> {
        let mut request = Request::get(&url).header("user-agent", "attune");
        if let Ok(token) = attune_sdk::secrets::get("api_token") {
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        let response = request.send().map_err(|e| e.to_string())?;
        attune_sdk::log::info(&format!("{url} answered {}", response.status));
        Ok(format!("{} {}", response.status, response.text()))
    }
}

export!(Pack);
