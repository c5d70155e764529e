//! Requests read by hyper's HTTP/1 server configured as the proxy's
//! (`proxy/src/park.rs`), over an in-memory stream: the parts the targets
//! check are exactly what `head::parse` gets in production.

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The proxy's largest request head (`proxy::Limits::default().max_head`).
const MAX_HEAD: usize = 1 << 20;

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
}

/// Every request hyper reads from `input`, in order, with its complete
/// body. A request whose body breaks off is left out: the proxy refuses it
/// before deciding anything ("the request body ended early").
///
/// One deviation from production: `half_close(true)`, so that requests
/// already sent are still answered after the input ends. It changes when
/// the connection closes, never how a request is parsed.
pub fn requests(input: &[u8]) -> Vec<(Parts, Bytes)> {
    let seen: Rc<RefCell<Vec<(Parts, Bytes)>>> = Rc::default();
    let sink = seen.clone();
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let sink = sink.clone();
        async move {
            let (parts, body) = req.into_parts();
            if let Ok(body) = body.collect().await {
                sink.borrow_mut().push((parts, body.to_bytes()));
            }
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }
    });
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let conn = http1::Builder::new()
                .max_buf_size(MAX_HEAD)
                .half_close(true)
                .serve_connection(TokioIo::new(server), svc);
            let talk = async {
                let _ = client.write_all(input).await;
                let _ = client.shutdown().await;
                let mut answers = Vec::new();
                let _ = client.read_to_end(&mut answers).await;
            };
            let _ = tokio::join!(conn, talk);
        })
    });
    Rc::try_unwrap(seen)
        .map(RefCell::into_inner)
        .unwrap_or_default()
}

/// `head` (everything before the first blank line) with `body` after it,
/// framed by a Content-Length that fits: the decide target is about what
/// a complete body says, not about framing (the head target covers that).
pub fn with_body(head: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + body.len() + 32);
    for line in head.split(|b| *b == b'\n') {
        let name = line.split(|b| *b == b':').next().unwrap_or_default();
        let name = name.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}
