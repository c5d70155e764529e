//! `/build`'s query string: its options dockerd reads there.

use super::Check;
use crate::policy::routes::query_values;
use crate::policy::{integrity, Denial, Policy, Rule};

/// `/build`'s options come from the query string (form bodies are refused
/// on the head): `networkmode=host` runs build steps in the host's network,
/// `cgroupparent` places them in another cgroup.
pub(in crate::policy) fn check_build_query(p: &Policy, query: Option<&str>) -> Check {
    let checks = [
        ("networkmode", Rule::HostNetwork),
        ("cgroupparent", Rule::CgroupParent),
    ];
    for (key, rule) in checks {
        if !p.denies(rule) {
            continue;
        }
        let values = query_values(query, key).map_err(|why| Denial {
            rule: integrity::QUERY,
            reason: p.reason(format!("ambiguous build query string: {why}"), ""),
        })?;
        if values.len() > 1 {
            return Err(Denial {
                rule: integrity::QUERY,
                reason: p.reason(format!("query parameter {key} is given more than once"), ""),
            });
        }
        let Some(value) = values.first() else {
            continue;
        };
        match rule {
            Rule::HostNetwork if value == "host" => {
                return Err(p.denial(
                    rule,
                    "builds in the host's network namespace are not allowed",
                    "networkmode",
                ));
            }
            Rule::HostNetwork if super::hostconfig::could_name_by_id(value) => {
                return Err(p.denial(rule, super::hostconfig::BY_ID, "networkmode"));
            }
            Rule::CgroupParent if !value.is_empty() => {
                return Err(p.denial(rule, "a cgroup parent is not allowed", "cgroupparent"));
            }
            _ => {}
        }
    }
    Ok(())
}
