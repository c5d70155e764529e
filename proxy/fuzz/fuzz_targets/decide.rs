//! A request head and, after the first blank line, its complete body (the
//! head's framing is replaced by a Content-Length that fits, so mutations
//! of the body are not lost to framing): head + body → verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_fuzz::{check, http1};

fuzz_target!(|data: &[u8]| {
    let split = data.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(i) => (&data[..i], &data[i + 4..]),
        None => (data, &[][..]),
    };
    if let Some((parts, body)) = http1::requests(&http1::with_body(head, body)).first() {
        check::request(parts, body);
    }
});
