//! Shared by the fuzz targets of the proxy's request parsing and decision
//! (issue 10, item 6):
//!
//! - `head`: raw HTTP/1 bytes through hyper's server, as the proxy runs it,
//!   into `head::parse` and both policies;
//! - `json`: `policy::json::parse_strict` against serde_json;
//! - `decide`: a request head and a complete body through the whole
//!   decision (`decide`, then `decide_body`) under ci-safe;
//! - `decide_gen`: the same decision on requests [`gen`] builds from a
//!   grammar of the Docker API, so that mutations change what a body means.
//!
//! Beyond "no panic", [`check`] asserts what must hold: a canonical head
//! reads the same twice, permissive refuses only misplaced upgrades, and
//! nothing ci-safe forwards is an escape in [`go`]'s model of how dockerd
//! reads the same bytes.

pub mod check;
pub mod gen;
pub mod go;
pub mod http1;
