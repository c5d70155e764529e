//! The one rule for a host name, wherever the supervisor takes one: a
//! certificate's SAN or the host of `DOCKER_HOST`.

/// LDH labels (underscores tolerated: container and compose names use
/// them), none empty or over 63 bytes or starting or ending with `-`, at
/// most 253 bytes in all; one trailing dot (a rooted name) is fine.
pub fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_ldh_with_underscores() {
        for ok in [
            "docker",
            "dind.example.com",
            "my_service",
            "a-b.c",
            "docker.",
            "x1",
        ] {
            assert!(is_host_name(ok), "{ok}");
        }
        for bad in ["", ".", "-a", "a-", "a..b", ".a", "a b", "a/b", "é", "a:1"] {
            assert!(!is_host_name(bad), "{bad}");
        }
        assert!(is_host_name(&format!("{}.b", "a".repeat(63))));
        assert!(!is_host_name(&"a".repeat(64)));
        assert!(!is_host_name(&["a"; 128].join(".")));
    }
}
