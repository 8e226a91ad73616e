//! Test guest for outbound HTTP: plain `wasi:http` calls, no helpers, so
//! the tests see exactly what the host allows and refuses.

wit_bindgen::generate!({ world: "fetch", path: "wit" });

use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

struct Fetch;

fn get(url: &str) -> Result<Fetched, String> {
    let (scheme, rest) = url.split_once("://").ok_or("no scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "bad path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response.consume().map_err(|()| "no body")?;
    let stream = body.stream().map_err(|()| "no stream")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend(chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading the body: {}", e.to_debug_string()));
            }
        }
    }
    Ok(Fetched {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

impl Guest for Fetch {
    fn get(url: String) -> Result<Fetched, String> {
        get(&url)
    }

    fn get_many(url: String, times: u32) -> Result<u32, String> {
        for n in 0..times {
            get(&url).map_err(|e| format!("request {n}: {e}"))?;
        }
        Ok(times)
    }
}

export!(Fetch);
