//! Integration-test support lives in `tests/`; this crate has no library code.
