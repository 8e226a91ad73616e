//! What a pack is granted, checked: outbound patterns, secret names and
//! quotas, each problem with its path.

use attune_runtime::PathError;
use attune_storage::Grants;

/// Checks grants: every outbound pattern parses (no path, query, userinfo
/// or bare `*`), every secret name is a valid name. each problem with its
/// path.
pub fn check_grants(grants: &Grants) -> Result<(), Vec<PathError>> {
    let mut errors: Vec<PathError> =
        attune_runtime::http::AllowedHosts::parse(&grants.allowed_outbound_hosts)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|(n, m)| PathError::new(format!("/allowed_outbound_hosts/{n}"), m))
            .collect();
    for (n, name) in grants.secrets.iter().enumerate() {
        if !crate::secrets::valid_name(name) {
            errors.push(PathError::new(
                format!("/secrets/{n}"),
                "a secret name is 1-128 letters, digits, `_` or `-`",
            ));
        }
    }
    if let Err(e) = quotas(grants) {
        errors.extend(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The quotas `grants` set, parsed (checked by [`check_grants`]: every
/// problem with its path).
pub fn quotas(grants: &Grants) -> Result<attune_runtime::Quotas, Vec<PathError>> {
    use attune_util::units::{parse_duration, parse_size};
    let mut errors = Vec::new();
    let max_memory = grants
        .max_memory
        .as_deref()
        .and_then(|text| match parse_size(text) {
            Ok(bytes) if bytes >= 64 << 10 => Some(bytes),
            Ok(_) => {
                errors.push(PathError::new("/max_memory", "at least 64KiB"));
                None
            }
            Err(e) => {
                errors.push(PathError::new("/max_memory", e));
                None
            }
        });
    let max_cpu = grants
        .max_cpu
        .as_deref()
        .and_then(|text| match parse_duration(text) {
            Ok(d) if d >= std::time::Duration::from_millis(1) => Some(d),
            Ok(_) => {
                errors.push(PathError::new("/max_cpu", "at least 1ms"));
                None
            }
            Err(e) => {
                errors.push(PathError::new("/max_cpu", e));
                None
            }
        });
    if grants.max_outbound_requests == Some(0) {
        errors.push(PathError::new("/max_outbound_requests", "at least 1"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(attune_runtime::Quotas {
        max_memory,
        max_cpu,
        max_outbound_requests: grants.max_outbound_requests,
    })
}
