//! How long the TLS bootstrap takes. The budget: the whole set from
//! an empty directory in under 20 ms with ECDSA, release build.
//!
//! `cargo bench -p dind-supervisor --bench certs` runs each case 50 times in
//! fresh temporary directories and prints median/min/max; it exits non-zero
//! if the ECDSA fresh-mint median is over budget. Without `--bench` (as under
//! `cargo test --benches`) each ECDSA case runs once, as a smoke test.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dind_supervisor::certs::{default_sans, ensure, Action, CertSpec, KeyType};

const BUDGET: Duration = Duration::from_millis(20);
/// docker:dind's default, as the CLI passes it.
const VALIDITY: Duration = Duration::from_secs(825 * 24 * 60 * 60);

fn main() -> ExitCode {
    let bench = std::env::args().any(|a| a == "--bench");
    let runs = if bench { 50 } else { 1 };
    let sans = default_sans(&[]);
    let spec = |dir: &std::path::Path, key_type| CertSpec {
        dir: dir.to_owned(),
        key_type,
        validity: VALIDITY,
        sans: sans.clone(),
    };

    let fresh = measure(runs, || {
        let tmp = tempfile::tempdir().expect("tempdir");
        let spec = spec(tmp.path(), KeyType::EcdsaP256);
        let started = Instant::now();
        let report = ensure(&spec).expect("fresh mint");
        let elapsed = started.elapsed();
        assert_eq!(report.client, Action::Minted);
        elapsed
    });
    print("fresh mint, ecdsa-p256 (8 files, fsync'd)", &fresh);

    let tmp = tempfile::tempdir().expect("tempdir");
    let reused_spec = spec(tmp.path(), KeyType::EcdsaP256);
    ensure(&reused_spec).expect("first mint");
    let reuse = measure(runs, || {
        let started = Instant::now();
        let report = ensure(&reused_spec).expect("reuse");
        let elapsed = started.elapsed();
        assert_eq!(report.server, Action::Reused);
        elapsed
    });
    print("reuse, ecdsa-p256 (verify only)", &reuse);

    let sans_time = measure(runs, || {
        let started = Instant::now();
        let sans = default_sans(&[]);
        let elapsed = started.elapsed();
        assert!(!sans.is_empty());
        elapsed
    });
    print(
        "default_sans (hostname, /etc/hosts, getifaddrs)",
        &sans_time,
    );

    if bench {
        // RSA key generation is a prime search: slow and very variable.
        for (key_type, runs) in [(KeyType::Rsa2048, 10), (KeyType::Rsa4096, 3)] {
            let samples = measure(runs, || {
                let tmp = tempfile::tempdir().expect("tempdir");
                let spec = spec(tmp.path(), key_type);
                let started = Instant::now();
                ensure(&spec).expect("fresh mint");
                started.elapsed()
            });
            print(&format!("fresh mint, {key_type}"), &samples);
        }
    }

    let median = fresh[fresh.len() / 2];
    if bench && median > BUDGET {
        println!("FAIL: ecdsa-p256 fresh mint median {median:?} is over the {BUDGET:?} budget");
        return ExitCode::FAILURE;
    }
    println!("ok: ecdsa-p256 fresh mint median {median:?} (budget {BUDGET:?})");
    ExitCode::SUCCESS
}

/// Sorted samples of `runs` calls.
fn measure(runs: usize, mut f: impl FnMut() -> Duration) -> Vec<Duration> {
    let mut samples: Vec<Duration> = (0..runs).map(|_| f()).collect();
    samples.sort();
    samples
}

fn print(case: &str, sorted: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{case:<50} runs {:>3}  median {:>8.3} ms  min {:>8.3} ms  max {:>8.3} ms",
        sorted.len(),
        ms(sorted[sorted.len() / 2]),
        ms(sorted[0]),
        ms(sorted[sorted.len() - 1]),
    );
}
