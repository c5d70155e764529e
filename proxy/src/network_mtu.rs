//! The MTU for bridge networks that clients create, where dockerd cannot add it itself.
//!
//! A pod's network often has an MTU below 1500 (VXLAN, WireGuard). dockerd's `--mtu` lowers
//! only the default bridge; networks a job creates (`docker network create`, compose) get 1500,
//! and transfers over them hang when path MTU discovery is black-holed (issue 12). dockerd 24
//! and later apply daemon.json's `default-network-opts` to every new network, and the
//! supervisor uses that there. For older dockerd the proxy does the same on
//! `POST /networks/create`, with dockerd 24's rules (`daemon/network.go`): the option goes to
//! networks of the bridge driver (an empty `Driver` means bridge), never overrides an option
//! the client set, and is not added to a network that takes its configuration from another
//! (`ConfigFrom`, where dockerd refuses driver options).
//!
//! The body is read as the policy reads it ([`json::parse_strict`]), and is left exactly as
//! sent whenever it is not plainly readable: not strict JSON, not an object, a field of the
//! wrong type, or a key Go would match to `Driver`, `Options` or `ConfigFrom` without exact
//! spelling. The rewrite happens before the policy decides, so the policy decides on the
//! bytes dockerd gets; it only ever adds one string option, which no rule reads.

use crate::head::RequestHead;
use crate::policy::json::{self, field_match, FieldMatch, Json};
use crate::policy::routes::{self, Route};

/// The bridge driver's option for the MTU of the network's bridge and its veths.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";

/// The fields of a network create body this module reads.
const FIELDS: &[&str] = &["Driver", "Options", "ConfigFrom"];

/// Whether the body of this request must be read to add the MTU: a network create, when
/// there is an MTU to add.
pub fn applies(mtu: Option<u32>, head: &RequestHead) -> bool {
    mtu.is_some() && routes::classify(&head.method, &head.path) == Route::NetworkCreate
}

/// [`add`] where [`applies`]: the body to forward instead, if any.
pub fn rewrite(
    mtu: Option<u32>,
    head: &RequestHead,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Option<Vec<u8>> {
    mtu.filter(|_| applies(mtu, head))
        .and_then(|mtu| add(body, content_type, mtu))
}

/// The body with `com.docker.network.driver.mtu` set to `mtu`, or None when it stays as sent
/// (not a bridge network, the client set an MTU, or the body is not plainly readable).
pub fn add(body: &[u8], content_type: Option<&[u8]>, mtu: u32) -> Option<Vec<u8>> {
    // dockerd reads JSON bodies only under this type; anything else is not ours to touch.
    if content_type.and_then(routes::media_type).as_deref() != Some("application/json") {
        return None;
    }
    let mut doc = json::parse_strict(body).ok()?;
    let Json::Object(members) = &mut doc else {
        return None;
    };
    let mut options = None;
    for (i, (key, value)) in members.iter().enumerate() {
        match field_match(key, FIELDS) {
            FieldMatch::Folded(_) => return None,
            FieldMatch::Exact("Driver") => match value {
                Json::Null => {}
                Json::String(d) if d.is_empty() || d == "bridge" => {}
                _ => return None,
            },
            FieldMatch::Exact("ConfigFrom") if *value != Json::Null => return None,
            FieldMatch::Exact("Options") => options = Some(i),
            _ => {}
        }
    }
    let entry = (MTU_OPTION.to_owned(), Json::String(mtu.to_string()));
    match options.map(|i| &mut members[i].1) {
        None => members.push(("Options".to_owned(), Json::Object(vec![entry]))),
        Some(opts @ Json::Null) => *opts = Json::Object(vec![entry]),
        Some(Json::Object(opts)) if opts.iter().any(|(k, _)| k == MTU_OPTION) => return None,
        Some(Json::Object(opts)) => opts.push(entry),
        Some(_) => return None,
    }
    Some(doc.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::tests::head;

    const JSON: Option<&[u8]> = Some(b"application/json");

    fn added(body: &str) -> Option<String> {
        add(body.as_bytes(), JSON, 1400).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn bridge_networks_get_the_mtu() {
        assert_eq!(
            added(r#"{"Name":"n"}"#).as_deref(),
            Some(r#"{"Name":"n","Options":{"com.docker.network.driver.mtu":"1400"}}"#)
        );
        assert_eq!(
            added(r#"{"Name":"n","Driver":"bridge","Options":{"a":"b"}}"#).as_deref(),
            Some(
                r#"{"Name":"n","Driver":"bridge","Options":{"a":"b","com.docker.network.driver.mtu":"1400"}}"#
            )
        );
        // compose sends empty and null fields.
        assert_eq!(
            added(r#"{"Name":"p_default","Driver":"","Options":null,"ConfigFrom":null}"#)
                .as_deref(),
            Some(
                r#"{"Name":"p_default","Driver":"","Options":{"com.docker.network.driver.mtu":"1400"},"ConfigFrom":null}"#
            )
        );
    }

    #[test]
    fn the_rewrite_reads_as_strictly_as_the_policy() {
        let out = added(r#"{"Name":"n","Labels":{"x":"1e3"},"IPAM":{"Config":[]}}"#).unwrap();
        let parsed = json::parse_strict(out.as_bytes()).unwrap();
        assert_eq!(
            parsed.get("Options").and_then(|o| o.get(MTU_OPTION)),
            Some(&Json::String("1400".into()))
        );
        assert_eq!(
            parsed.get("IPAM"),
            Some(&json::parse_strict(br#"{"Config":[]}"#).unwrap())
        );
    }

    #[test]
    fn what_dockerd_would_not_apply_a_default_to_is_left_as_sent() {
        for body in [
            // The client's own MTU wins.
            r#"{"Name":"n","Options":{"com.docker.network.driver.mtu":"9000"}}"#,
            // Other drivers have their own options.
            r#"{"Name":"n","Driver":"overlay"}"#,
            r#"{"Name":"n","Driver":"macvlan"}"#,
            r#"{"Name":"n","Driver":"Bridge"}"#,
            // dockerd refuses driver options on a ConfigFrom network.
            r#"{"Name":"n","ConfigFrom":{"Network":"cfg"}}"#,
        ] {
            assert_eq!(added(body), None, "{body}");
        }
    }

    #[test]
    fn anything_not_plainly_readable_is_left_as_sent() {
        for body in [
            "",
            "[]",
            "null",
            "not json",
            r#"{"Name":"n","Name":"m"}"#,
            r#"{"Name":"n"} {}"#,
            // Go would read these keys as the fields: ambiguous, never guessed.
            r#"{"driver":"macvlan"}"#,
            r#"{"options":{"a":"b"}}"#,
            r#"{"Configfrom":{"Network":"cfg"}}"#,
            "{\"Option\u{017F}\":{\"a\":\"b\"}}",
            // Wrong types: dockerd refuses them itself.
            r#"{"Driver":1}"#,
            r#"{"Options":[]}"#,
            r#"{"Options":"x"}"#,
        ] {
            assert_eq!(added(body), None, "{body}");
        }
        assert_eq!(add(br#"{"Name":"n"}"#, None, 1400), None);
        assert_eq!(add(br#"{"Name":"n"}"#, Some(b"text/plain"), 1400), None);
        assert!(add(
            br#"{"Name":"n"}"#,
            Some(b"application/json; charset=utf-8"),
            1400
        )
        .is_some());
    }

    #[test]
    fn only_network_creates_are_read_and_only_with_an_mtu() {
        let create = head("POST", "/v1.41/networks/create", &[]).unwrap();
        assert!(applies(Some(1400), &create));
        assert!(!applies(None, &create));
        for (method, uri) in [
            ("POST", "/v1.41/containers/create"),
            ("GET", "/v1.41/networks"),
            ("POST", "/v1.41/networks/n/connect"),
        ] {
            assert!(
                !applies(Some(1400), &head(method, uri, &[]).unwrap()),
                "{uri}"
            );
        }
    }
}
