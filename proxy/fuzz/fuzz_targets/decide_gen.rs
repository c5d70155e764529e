//! Requests built by a grammar of the Docker API from the fuzzer's bytes,
//! through hyper into the whole decision (head + body → verdict).
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use proxy_fuzz::{check, gen, http1};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = gen::request(&mut Unstructured::new(data)) else {
        return;
    };
    for (parts, body) in http1::requests(&input) {
        check::request(&parts, &body);
    }
});
