//! What an idle server holds in memory.

use crate::common::start_server;

/// A field of `/proc/<pid>/smaps_rollup`, in KiB.
fn rollup(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in smaps_rollup"))
}

/// With transparent huge pages on for every mapping (a common default),
/// the allocator's arenas were backed by 2 MiB pages as they were touched:
/// an idle server held tens of MiB it never used.
#[test]
fn an_idle_server_holds_no_memory_it_never_used() {
    let server = start_server();
    // The hello-world rule's first run, then idle.
    std::thread::sleep(std::time::Duration::from_secs(12));
    let pid = server.child.id();
    let anonymous = rollup(pid, "Anonymous");
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.contains("[always]") {
        assert_eq!(
            rollup(pid, "AnonHugePages"),
            0,
            "anonymous memory {anonymous} KiB"
        );
    }
    // An unoptimised build's own heap, with room to spare: it was above
    // 50 MiB with huge pages.
    assert!(anonymous < 40 * 1024, "anonymous memory {anonymous} KiB");
}
