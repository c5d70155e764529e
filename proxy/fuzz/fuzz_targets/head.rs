//! Raw bytes on a client connection: every request hyper reads from them
//! goes through `head::parse` and both policies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_fuzz::{check, http1};

fuzz_target!(|data: &[u8]| {
    for (parts, body) in http1::requests(data) {
        check::request(&parts, &body);
    }
});
