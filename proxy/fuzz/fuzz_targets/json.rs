//! Any bytes as a request body for the strict JSON reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_fuzz::check;

fuzz_target!(|data: &[u8]| check::strict_json(data));
