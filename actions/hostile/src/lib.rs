//! Test guest that misbehaves on purpose, one export per sandbox limit.

use std::io::Write;

attune_sdk::generate!("hostile");

struct Hostile;

impl Guest for Hostile {
    fn spin() {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    fn nap(ms: u64) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }

    fn grow(mib: u32) -> u32 {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        for _ in 0..mib {
            chunks.push(vec![1u8; 1 << 20]);
        }
        std::hint::black_box(&chunks);
        chunks.len() as u32
    }

    fn recurse(depth: u64) -> u64 {
        // Each frame keeps a live array so the recursion cannot become a loop.
        fn down(n: u64, pad: [u64; 16]) -> u64 {
            if n == 0 {
                return pad[0];
            }
            let next = std::hint::black_box([n; 16]);
            down(n - 1, next).wrapping_add(std::hint::black_box(pad[15]))
        }
        down(depth, [0; 16])
    }

    fn read_file(path: String) -> Result<String, String> {
        std::fs::read_to_string(&path).map_err(|e| e.to_string())
    }

    fn list_dir(path: String) -> Result<Vec<String>, String> {
        let entries = std::fs::read_dir(&path).map_err(|e| e.to_string())?;
        Ok(entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }

    fn write_file(path: String, contents: String) -> Result<String, String> {
        std::fs::write(&path, &contents).map_err(|e| e.to_string())?;
        std::fs::read_to_string(&path).map_err(|e| e.to_string())
    }

    fn disk(steps: Vec<String>) -> Vec<String> {
        let mut held = Vec::new();
        steps
            .iter()
            .map(|step| disk_step(step, &mut held).unwrap_or_else(|e| format!("error: {e}")))
            .collect()
    }

    fn env() -> Vec<(String, String)> {
        std::env::vars().collect()
    }

    fn connect(addr: String) -> Result<(), String> {
        std::net::TcpStream::connect(addr.as_str())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn flood(bytes: u64) -> u64 {
        let line = [b'x'; 1024];
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        let mut written = 0;
        while written < bytes {
            let n = line.len().min((bytes - written) as usize);
            let _ = out.write_all(&line[..n]);
            let _ = err.write_all(&line[..n]);
            written += n as u64;
        }
        let _ = out.flush();
        written
    }

    fn explode(message: String) {
        panic!("{message}");
    }

    fn chatter(count: u32) -> u32 {
        for i in 0..count {
            attune_sdk::log::with_fields(
                attune_sdk::log::Level::Info,
                "chatter",
                &[("i", &i.to_string())],
            );
        }
        count
    }

    fn drip(lines: u32, ms: u64) -> u32 {
        for i in 0..lines {
            println!("line {i}");
            let _ = std::io::stdout().flush();
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        lines
    }

    fn leak(name: String) -> Result<String, String> {
        let value = attune_sdk::secrets::get(&name).map_err(|e| e.name().to_string())?;
        println!("the secret is {value}");
        eprintln!("{value}");
        attune_sdk::log::info(&format!("read {value}"));
        Ok(value)
    }

    fn remember(key: String, value: String, ttl_ms: Option<u64>) -> Result<(), String> {
        let ttl = ttl_ms.map(std::time::Duration::from_millis);
        match ttl {
            Some(ttl) => attune_sdk::kv::set_for(&key, &value, ttl),
            None => attune_sdk::kv::set(&key, &value),
        }
        .map_err(kv_error)
    }

    fn recall(key: String) -> Result<Option<String>, String> {
        attune_sdk::kv::get(&key).map_err(kv_error)
    }

    fn count(key: String, delta: i64) -> Result<i64, String> {
        attune_sdk::kv::increment(&key, delta).map_err(kv_error)
    }

    fn keys(prefix: String) -> Result<Vec<String>, String> {
        attune_sdk::kv::list_keys(&prefix).map_err(kv_error)
    }

    fn forget(key: String) -> Result<bool, String> {
        attune_sdk::kv::delete(&key).map_err(kv_error)
    }

    fn whoami() -> (String, String, u32) {
        let ctx = attune_sdk::context::current();
        (ctx.id, ctx.action, ctx.attempt)
    }
}

/// The key-value error as `kind` or `kind: message`.
fn kv_error(e: attune_sdk::kv::Error) -> String {
    use attune_sdk::kv::Error;
    match e {
        Error::TooLarge(m) => format!("too-large: {m}"),
        Error::NotAnInteger => "not-an-integer".into(),
        Error::Unavailable(m) => format!("unavailable: {m}"),
    }
}

export!(Hostile);

/// One step of `disk`; what it did, or the first error.
fn disk_step(step: &str, held: &mut Vec<std::fs::File>) -> std::io::Result<String> {
    use std::io::{Seek, SeekFrom};
    let words: Vec<&str> = step.split_whitespace().collect();
    let number = |i: usize| -> u64 { words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0) };
    let path = |i: usize| format!("/scratch/{}", words.get(i).copied().unwrap_or(""));
    let append = |name: String| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(name)
    };
    let chunk = vec![b'x'; 1 << 20];
    match words.first().copied() {
        Some("write") => {
            let mut f = append(path(1))?;
            for _ in 0..number(2) {
                f.write_all(&chunk)?;
            }
            Ok(format!("wrote {} MiB", number(2)))
        }
        Some("fill") => {
            let mut f = append(path(1))?;
            let mut mib = 0;
            loop {
                if let Err(e) = f.write_all(&chunk) {
                    return Ok(format!("full after {mib} MiB: {e}"));
                }
                mib += 1;
            }
        }
        Some("hold") => {
            held.push(append(path(1))?);
            Ok("held".into())
        }
        Some("delete") => std::fs::remove_file(path(1)).map(|()| "deleted".into()),
        Some("sparse") => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path(1))?;
            f.seek(SeekFrom::Start(number(2)))?;
            f.write_all(b"!")?;
            Ok("written".into())
        }
        Some("dirs") => {
            for i in 0..number(1) {
                if let Err(e) = std::fs::create_dir(format!("/scratch/d{i}")) {
                    return Ok(format!("{i} dirs: {e}"));
                }
            }
            Ok(format!("{} dirs", number(1)))
        }
        _ => Ok(format!("unknown step {step}")),
    }
}
