//! How long the decision point takes for a typical `docker run` create body
//! under ci-safe: parsing the head, the strict JSON read and every rule.
//! Issue 10's budget: under 50 µs a decision, release build.
//!
//! `cargo bench -p proxy --bench decide` decides the body 20,000 times in
//! batches of 100 and prints the median, p99 and max per decision; it exits
//! non-zero if the median is over budget. Without `--bench` (as under
//! `cargo test --benches`) it decides once and checks the verdict.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use proxy::decide::{self, Decision};
use proxy::policy::Policy;
use proxy::respond::Refusal;

const BUDGET: Duration = Duration::from_micros(50);
const BATCH: u32 = 100;

/// What the docker CLI 28 sends for
/// `docker run --rm -v /builds/p:/src -w /src -e CI=1 image sh -c 'make test'`.
const CREATE: &str = r#"{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":true,"AttachStderr":true,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["CI=1"],"Cmd":["sh","-c","make test"],"Image":"registry.example/ci/build:latest","Volumes":{},"WorkingDir":"/src","Entrypoint":null,"OnBuild":null,"Labels":{},"HostConfig":{"Binds":["/builds/p:/src"],"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":true,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"Annotations":null,"CapAdd":null,"CapDrop":null,"CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":0,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":null,"OomKillDisable":false,"PidsLimit":null,"Ulimits":[],"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{"default":{"IPAMConfig":null,"Links":null,"Aliases":null,"MacAddress":"","DriverOpts":null,"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}}}"#;

/// One whole decision, as the proxy makes it for this request.
fn decide_once(policy: &Policy) -> Result<(), Refusal> {
    let (parts, ()) = hyper::Request::post("/v1.41/containers/create?name=")
        .header("content-type", "application/json")
        .header("content-length", CREATE.len())
        .body(())
        .expect("a valid request")
        .into_parts();
    let head = proxy::head::parse(&parts).expect("a valid head");
    let ct = Some(&b"application/json"[..]);
    match decide::decide(&head, policy, ct) {
        Decision::InspectBody { .. } => decide::decide_body(&head, policy, ct, CREATE.as_bytes()),
        Decision::Forward => Ok(()),
        Decision::Refuse(refusal) => Err(refusal),
    }
}

fn main() -> ExitCode {
    let bench = std::env::args().any(|a| a == "--bench");
    let policy = Policy::load("ci-safe", None).expect("ci-safe loads");
    assert_eq!(
        decide_once(&policy),
        Ok(()),
        "the ordinary create must be allowed"
    );
    if !bench {
        return ExitCode::SUCCESS;
    }
    for _ in 0..1000 {
        let _ = std::hint::black_box(decide_once(&policy));
    }
    let mut per: Vec<Duration> = (0..200)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..BATCH {
                let _ = std::hint::black_box(decide_once(std::hint::black_box(&policy)));
            }
            started.elapsed() / BATCH
        })
        .collect();
    per.sort();
    let (median, p99, max) = (
        per[per.len() / 2],
        per[per.len() * 99 / 100],
        per[per.len() - 1],
    );
    println!(
        "decide: ci-safe, {} byte create body: median {:.1} µs, p99 {:.1} µs, max {:.1} µs per decision (batches of {BATCH}; budget {} µs)",
        CREATE.len(),
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        max.as_secs_f64() * 1e6,
        BUDGET.as_micros()
    );
    if median > BUDGET {
        eprintln!("over budget");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
