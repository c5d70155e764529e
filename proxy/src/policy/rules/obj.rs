//! One object level of a body, read as Go's `encoding/json` would fill a
//! struct: keys checked against the level's fields (no folded spelling),
//! values read as Go types (a wrong type is refused as `parse`).

use crate::policy::json::{field_match, FieldMatch, Json};
use crate::policy::{integrity, Denial, Policy};

/// One object level, its keys checked against the level's fields.
pub(super) struct Obj<'a> {
    pub(super) members: &'a [(String, Json)],
    /// Where this object is in the body: "" for the top, `HostConfig`, …
    at: String,
}

/// `value` as an object whose keys are unambiguous for `levels`; None for
/// null (Go leaves the field at its zero value).
pub(super) fn object<'a>(
    p: &Policy,
    value: &'a Json,
    levels: &[&[&'static str]],
    at: &str,
) -> Result<Option<Obj<'a>>, Denial> {
    let members = match value {
        Json::Null => return Ok(None),
        Json::Object(m) => m,
        other => {
            return Err(type_error(
                p,
                if at.is_empty() { "the body" } else { at },
                "an object",
                other,
            ))
        }
    };
    for (key, _) in members {
        let exact = levels.iter().any(|fields| fields.contains(&key.as_str()));
        if exact {
            continue;
        }
        for fields in levels {
            if let FieldMatch::Folded(field) = field_match(key, fields) {
                let obj = Obj {
                    members,
                    at: at.to_owned(),
                };
                return Err(Denial {
                    rule: integrity::AMBIGUOUS_KEY,
                    reason: p.reason(
                        format!("key {key:?} is ambiguous: dockerd reads it as {field}; spell it exactly"),
                        &obj.path(key),
                    ),
                });
            }
        }
    }
    Ok(Some(Obj {
        members,
        at: at.to_owned(),
    }))
}

pub(super) fn type_error(p: &Policy, field: &str, want: &str, got: &Json) -> Denial {
    Denial {
        rule: integrity::PARSE,
        reason: p.reason(format!("{field} must be {want}, not {}", got.kind()), ""),
    }
}

impl<'a> Obj<'a> {
    pub(super) fn get(&self, key: &str) -> Option<&'a Json> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `HostConfig.Privileged`, or `Privileged` at the top.
    pub(super) fn path(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    /// A Go `bool`: absent and null are false.
    pub(super) fn bool(&self, p: &Policy, key: &str) -> Result<bool, Denial> {
        match self.get(key) {
            None | Some(Json::Null) => Ok(false),
            Some(Json::Bool(b)) => Ok(*b),
            Some(other) => Err(type_error(p, &self.path(key), "a boolean", other)),
        }
    }

    /// A Go `string`: None when absent or null.
    pub(super) fn string(&self, p: &Policy, key: &str) -> Result<Option<&'a str>, Denial> {
        match self.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(other) => Err(type_error(p, &self.path(key), "a string", other)),
        }
    }

    /// A Go `[]string`. A null element decodes to "".
    pub(super) fn strings(&self, p: &Policy, key: &str) -> Result<Vec<&'a str>, Denial> {
        match self.get(key) {
            None | Some(Json::Null) => Ok(Vec::new()),
            Some(Json::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Json::String(s) => Ok(s.as_str()),
                    Json::Null => Ok(""),
                    other => Err(type_error(p, &self.path(key), "an array of strings", other)),
                })
                .collect(),
            Some(other) => Err(type_error(p, &self.path(key), "an array of strings", other)),
        }
    }

    /// moby's `strslice.StrSlice`: a string or an array of strings.
    pub(super) fn str_slice(&self, p: &Policy, key: &str) -> Result<Vec<&'a str>, Denial> {
        match self.get(key) {
            Some(Json::String(s)) => Ok(vec![s.as_str()]),
            _ => self.strings(p, key),
        }
    }

    /// The length of a Go slice of anything.
    pub(super) fn array_len(&self, p: &Policy, key: &str) -> Result<usize, Denial> {
        match self.get(key) {
            None | Some(Json::Null) => Ok(0),
            Some(Json::Array(items)) => Ok(items.len()),
            Some(other) => Err(type_error(p, &self.path(key), "an array", other)),
        }
    }

    /// A Go `map[string]string`. Keys are exact (maps do not fold); a null
    /// value decodes to "".
    pub(super) fn string_map(
        &self,
        p: &Policy,
        key: &str,
    ) -> Result<Vec<(&'a str, &'a str)>, Denial> {
        match self.get(key) {
            None | Some(Json::Null) => Ok(Vec::new()),
            Some(Json::Object(members)) => members
                .iter()
                .map(|(k, v)| match v {
                    Json::String(s) => Ok((k.as_str(), s.as_str())),
                    Json::Null => Ok((k.as_str(), "")),
                    other => Err(type_error(
                        p,
                        &self.path(key),
                        "an object of strings",
                        other,
                    )),
                })
                .collect(),
            Some(other) => Err(type_error(
                p,
                &self.path(key),
                "an object of strings",
                other,
            )),
        }
    }
}
