//! Requests built from the fuzzer's bytes by a grammar of the Docker API:
//! the routes the policy reads bodies of, and bodies made of the fields
//! the rules read, each key spelled the way the bypasses of issue #5 spell
//! them (case, Go's extra folds, escapes, duplicates) and each value drawn
//! from the allowed and the refused.
//!
//! Byte-level mutation of a real request rarely changes what a body means
//! and still parses (a second capability in `CapAdd`, a `Mounts` entry
//! whose source leaves the allowlist); this grammar makes every input a
//! meaningful request, and libFuzzer's coverage feedback still steers it.

use arbitrary::{Result, Unstructured};

/// The request as raw HTTP/1.1 bytes, with a Content-Length that fits.
pub fn request(u: &mut Unstructured) -> Result<Vec<u8>> {
    let version = *u.choose(&["", "/v1.41", "/v1.23", "/v1.24", "/v1.44", "/v1.12"])?;
    let id = *u.choose(&["c1", "0123456789ab", "a/b", "x/kill", "create"])?;
    let route = u.int_in_range(0..=7)?;
    let (path, body) = match route {
        0 => ("/containers/create".to_owned(), create(u)?),
        1 => (format!("/containers/{id}/start"), create(u)?),
        2 => (format!("/containers/{id}/exec"), exec(u)?),
        3 => (format!("/containers/{id}/update"), update(u)?),
        4 => ("/volumes/create".to_owned(), volume(u)?),
        5 => ("/networks/create".to_owned(), network(u)?),
        6 => (format!("/build?{}", build_query(u)?), Vec::new()),
        _ => {
            let other = *u.choose(&[
                "/plugins/pull",
                "/swarm/init",
                "/services/create",
                "/containers/c1/kill",
                "/images/create",
                "/exec/e0/start",
                "/containers/prune",
                "/secrets/create",
            ])?;
            (other.to_owned(), create(u)?)
        }
    };
    let path = path_trick(u, &format!("{version}{path}"))?;
    let method = if u.ratio(1, 16)? {
        *u.choose(&["PUT", "DELETE", "PATCH", "post"])?
    } else {
        "POST"
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\n");
    let content_type = *u.choose(&[
        Some("application/json"),
        Some("application/json"),
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some(" Application/JSON "),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/x-tar"),
        None,
    ])?;
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if u.ratio(1, 16)? {
        head.push_str("Connection: Upgrade\r\nUpgrade: tcp\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Paths as the router could read them differently: encodings, dot and
/// empty segments, a trailing slash.
fn path_trick(u: &mut Unstructured, path: &str) -> Result<String> {
    Ok(match u.int_in_range(0..=15)? {
        0 => format!("{path}/"),
        1 => path.replacen("/c", "/%63", 1),
        2 => path.replacen('/', "//", 2),
        3 => path.replacen("/containers/", "/containers/./", 1),
        4 => path.replacen("/containers/", "/x/../containers/", 1),
        5 => path.replacen("/containers/", "/containers%2F", 1),
        6 => format!("{path}#/../plugins/pull"),
        _ => path.to_owned(),
    })
}

fn build_query(u: &mut Unstructured) -> Result<String> {
    let mut pairs = vec!["t=x".to_owned()];
    for _ in 0..u.int_in_range(0..=3)? {
        let key = *u.choose(&[
            "networkmode",
            "NetworkMode",
            "network%6dode",
            "cgroupparent",
            "cgroupparent",
        ])?;
        let value = *u.choose(&[
            "host", "default", "ho%73t", "", "%2F", "bridge", "host;x=1", "h+ost",
        ])?;
        pairs.push(format!("{key}={value}"));
    }
    let sep = *u.choose(&["&", "&", "&", ";", "&&"])?;
    Ok(pairs.join(sep))
}

/// One JSON object: members in order. Struct keys are spelled by [`spell`]
/// when rendered; map keys (options) are matched exactly by Go and kept.
struct Obj {
    members: Vec<(String, String)>,
    respell: bool,
}

impl Obj {
    fn new() -> Obj {
        Obj {
            members: Vec::new(),
            respell: true,
        }
    }

    fn map() -> Obj {
        Obj {
            members: Vec::new(),
            respell: false,
        }
    }

    fn add(&mut self, key: &str, value: String) -> Result<()> {
        self.members.push((key.to_owned(), value));
        Ok(())
    }

    fn render(mut self, u: &mut Unstructured) -> Result<String> {
        // A member twice: Go keeps the last (and merges objects).
        if !self.members.is_empty() && u.ratio(1, 12)? {
            let i = u.choose_index(self.members.len())?;
            let dup = self.members[i].clone();
            self.members.push(dup);
        }
        let ws = *u.choose(&["", "", " ", "\n\t"])?;
        let mut out = Vec::new();
        for (k, v) in &self.members {
            let k = if self.respell {
                spell(u, k)?
            } else {
                k.clone()
            };
            out.push(format!("{ws}\"{k}\"{ws}:{ws}{v}"));
        }
        Ok(format!("{{{}}}", out.join(",")))
    }
}

/// `name` as a key: mostly exact, else respelled the ways Go still matches
/// it (case, the Kelvin sign, the long s), JSON escapes, or a near miss Go
/// does not match (dotless i).
fn spell(u: &mut Unstructured, name: &str) -> Result<String> {
    if u.ratio(3, 4)? {
        return Ok(name.to_owned());
    }
    let mut out = String::new();
    for c in name.chars() {
        let c = match u.int_in_range(0..=9)? {
            0 => c.to_ascii_lowercase(),
            1 => c.to_ascii_uppercase(),
            2 if c.eq_ignore_ascii_case(&'s') => '\u{17f}',
            2 if c.eq_ignore_ascii_case(&'k') => '\u{212a}',
            2 if c == 'i' => '\u{131}',
            _ => c,
        };
        if u.ratio(1, 10)? {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn pick_string(u: &mut Unstructured, pool: &[&str]) -> Result<String> {
    Ok(string(u.choose(pool)?))
}

fn array_of(u: &mut Unstructured, pool: &[&str]) -> Result<String> {
    let mut items = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        items.push(pick_string(u, pool)?);
    }
    Ok(format!("[{}]", items.join(",")))
}

/// A value of a Go bool field, mostly of the right type.
fn boolean(u: &mut Unstructured) -> Result<String> {
    Ok((*u.choose(&["true", "false", "true", "null", "\"true\"", "1"])?).to_owned())
}

/// Or the value's JSON null, which Go reads as "leave it".
fn or_null(u: &mut Unstructured, v: String) -> Result<String> {
    Ok(if u.ratio(1, 10)? { "null".into() } else { v })
}

const PATHS: &[&str] = &[
    "/",
    "/etc",
    "/builds",
    "/builds/x",
    "/builds/../etc",
    "/builds/./x",
    "/cache",
    "/cache/",
    "/builds2",
    "//etc",
    "/builds//x",
    "/var/run/docker.sock",
    "/proc",
    "builds",
    "",
    "/builds/x/..",
    "/BUILDS",
];
const CAPS: &[&str] = &[
    "NET_RAW",
    "CAP_CHOWN",
    "chown",
    "SYS_ADMIN",
    "cap_sys_admin",
    "ALL",
    "all",
    "CAP_ALL",
    "\u{17f}ys_admin",
    "NET_ADMIN",
    "sys_ptrace",
    "SYS_MODULE",
    "KILL",
    "setuid",
    "CAP_SYS_RAWIO",
];
const MODES: &[&str] = &[
    "host",
    "HOST",
    "container:x",
    "private",
    "default",
    "bridge",
    "",
    "host ",
    "shareable",
    "none",
];

fn bind_spec(u: &mut Unstructured) -> Result<String> {
    let source = *u.choose(PATHS)?;
    let tail = *u.choose(&[":/h", ":/h:ro", ":/h:rw,z", "", ":/h:ro:x", ":"])?;
    Ok(string(&format!("{source}{tail}")))
}

fn mount(u: &mut Unstructured) -> Result<String> {
    let mut m = Obj::new();
    let ty = *u.choose(&[
        "bind", "volume", "tmpfs", "BIND", "npipe", "image", "cluster",
    ])?;
    m.add("Type", string(ty))?;
    m.add("Source", pick_string(u, PATHS)?)?;
    m.add("Target", string("/m"))?;
    if u.ratio(1, 2)? {
        let mut opts = Obj::map();
        for _ in 0..u.int_in_range(0..=3)? {
            let (k, v) = *u.choose(&[
                ("o", "bind"),
                ("o", "rbind"),
                ("o", "ro,bind"),
                ("o", "bindx"),
                ("type", "none"),
                ("type", "tmpfs"),
                ("type", "ext4"),
                ("device", "/"),
                ("device", "/builds/x"),
                ("device", "/etc"),
            ])?;
            // Option keys are map keys: Go matches them exactly.
            opts.add(k, string(v))?;
        }
        let mut driver = Obj::new();
        driver.add("Name", pick_string(u, &["local", "", "nfs"])?)?;
        let opts = opts.render(u)?;
        driver.add("Options", or_null(u, opts)?)?;
        let mut vo = Obj::new();
        let driver = driver.render(u)?;
        vo.add("DriverConfig", or_null(u, driver)?)?;
        if u.ratio(1, 4)? {
            vo.add(
                "Subpath",
                pick_string(u, &["x", "../x", "/x", "a/../../b"])?,
            )?;
        }
        m.add("VolumeOptions", vo.render(u)?)?;
    }
    if u.ratio(1, 4)? {
        let opt = *u.choose(&["[[\"bind\"]]", "[[\"noexec\"]]", "[[\"rbind\",\"\"]]", "[]"])?;
        m.add("TmpfsOptions", format!("{{\"Options\":{opt}}}"))?;
    }
    m.render(u)
}

/// HostConfig members, for the HostConfig object or the top level.
fn hostconfig_members(u: &mut Unstructured, obj: &mut Obj) -> Result<()> {
    for _ in 0..u.int_in_range(1..=6)? {
        match u.int_in_range(0..=19)? {
            0 | 1 => obj.add("Privileged", boolean(u)?)?,
            2 | 3 => {
                let v = if u.ratio(1, 4)? {
                    pick_string(u, CAPS)?
                } else {
                    array_of(u, CAPS)?
                };
                obj.add("CapAdd", or_null(u, v)?)?
            }
            4 | 5 => {
                let mut binds = Vec::new();
                for _ in 0..u.int_in_range(0..=3)? {
                    binds.push(bind_spec(u)?);
                }
                obj.add("Binds", format!("[{}]", binds.join(",")))?
            }
            6 | 7 => {
                let mut mounts = Vec::new();
                for _ in 0..u.int_in_range(0..=2)? {
                    mounts.push(mount(u)?);
                }
                obj.add("Mounts", format!("[{}]", mounts.join(",")))?
            }
            8 | 9 => {
                let field = *u.choose(&[
                    "NetworkMode",
                    "PidMode",
                    "IpcMode",
                    "UTSMode",
                    "UsernsMode",
                    "CgroupnsMode",
                    "Cgroup",
                ])?;
                obj.add(field, pick_string(u, MODES)?)?
            }
            10 => {
                let v = *u.choose(&["[]", "[{\"PathOnHost\":\"/dev/sda\"}]", "null", "{}"])?;
                obj.add("Devices", v.to_owned())?
            }
            11 => {
                let field = *u.choose(&["DeviceRequests", "DeviceCgroupRules"])?;
                let v = *u.choose(&["[]", "[{\"Count\":-1}]", "[\"c 1:3 mr\"]", "null"])?;
                obj.add(field, v.to_owned())?
            }
            12 => {
                let opts = &[
                    "no-new-privileges",
                    "seccomp=unconfined",
                    "seccomp=builtin",
                    "apparmor:unconfined",
                    "label=disable",
                    "label=level:s0",
                    "no-new-privileges=false",
                    "systempaths=unconfined",
                    "writable-cgroups=true",
                ];
                obj.add("SecurityOpt", array_of(u, opts)?)?
            }
            13 => obj.add(
                "Runtime",
                pick_string(u, &["runc", "runsc", "", "io.containerd.runc.v2"])?,
            )?,
            14 => obj.add("CgroupParent", pick_string(u, &["", "/", "x"])?)?,
            15 => obj.add("VolumesFrom", array_of(u, &["c1", "c2:ro"])?)?,
            16 => {
                let (k, v) = *u.choose(&[
                    ("net.ipv4.ip_forward", "1"),
                    ("kernel.core_pattern", "|/x"),
                    ("kernel.shmmax", "1"),
                    ("net..x", "1"),
                ])?;
                obj.add("Sysctls", format!("{{{}:{}}}", string(k), string(v)))?
            }
            17 => obj.add(
                "Tmpfs",
                format!(
                    "{{\"/t\":{}}}",
                    pick_string(u, &["rw", "bind", "rbind,ro", ""])?
                ),
            )?,
            18 => obj.add(
                "MaskedPaths",
                (*u.choose(&["[]", "null", "[\"/proc/kcore\"]"])?).to_owned(),
            )?,
            _ => obj.add(
                "Memory",
                (*u.choose(&["0", "1e400", "-1", "1.5"])?).to_owned(),
            )?,
        }
    }
    Ok(())
}

fn create(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut top = Obj::new();
    top.add("Image", string("alpine"))?;
    if u.ratio(1, 2)? {
        top.add("Cmd", string("sh"))?;
    }
    let placement = u.int_in_range(0..=5)?;
    if placement <= 2 {
        let mut hc = Obj::new();
        hostconfig_members(u, &mut hc)?;
        top.add("HostConfig", hc.render(u)?)?;
    }
    if placement == 3 {
        top.add("HostConfig", "null".into())?;
    }
    if placement >= 3 {
        hostconfig_members(u, &mut top)?;
    }
    if placement == 2 {
        // A second HostConfig: Go decodes both into one struct.
        let mut hc = Obj::new();
        hostconfig_members(u, &mut hc)?;
        top.add("HostConfig", hc.render(u)?)?;
    }
    if u.ratio(1, 8)? {
        let ep = *u.choose(&["host", "bridge", "n1"])?;
        top.add(
            "NetworkingConfig",
            format!("{{\"EndpointsConfig\":{{{}:{{}}}}}}", string(ep)),
        )?;
    }
    let body = top.render(u)?;
    finish(u, body)
}

fn exec(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut o = Obj::new();
    o.add("Cmd", "[\"id\"]".into())?;
    if u.ratio(3, 4)? {
        o.add("Privileged", boolean(u)?)?;
    }
    if u.ratio(1, 2)? {
        o.add("User", pick_string(u, &["0", "root", ""])?)?;
    }
    let body = o.render(u)?;
    finish(u, body)
}

fn update(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut o = Obj::new();
    for _ in 0..u.int_in_range(0..=3)? {
        match u.int_in_range(0..=3)? {
            0 => o.add(
                "Devices",
                (*u.choose(&["[]", "[{\"PathOnHost\":\"/dev/sda\"}]"])?).to_owned(),
            )?,
            1 => o.add(
                "DeviceRequests",
                (*u.choose(&["[]", "[{\"Count\":-1}]"])?).to_owned(),
            )?,
            2 => o.add("CgroupParent", pick_string(u, &["", "/"])?)?,
            _ => o.add("Memory", "1000000".into())?,
        }
    }
    let body = o.render(u)?;
    finish(u, body)
}

fn volume(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut o = Obj::new();
    o.add("Name", string("v1"))?;
    o.add("Driver", pick_string(u, &["local", "", "nfs", "LOCAL"])?)?;
    let mut opts = Obj::map();
    for _ in 0..u.int_in_range(0..=3)? {
        let (k, v) = *u.choose(&[
            ("o", "bind"),
            ("o", "rbind,ro"),
            ("type", "none"),
            ("type", "tmpfs"),
            ("type", "nfs"),
            ("device", "/"),
            ("device", "/builds/x"),
            ("device", "/cache/../etc"),
            ("device", "tmpfs"),
        ])?;
        opts.add(k, string(v))?;
    }
    let opts = opts.render(u)?;
    o.add("DriverOpts", or_null(u, opts)?)?;
    let body = o.render(u)?;
    finish(u, body)
}

fn network(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut o = Obj::new();
    o.add("Name", string("n1"))?;
    o.add(
        "Driver",
        pick_string(
            u,
            &[
                "bridge", "macvlan", "ipvlan", "", "host", "Macvlan", "overlay",
            ],
        )?,
    )?;
    let body = o.render(u)?;
    finish(u, body)
}

/// The body as sent: sometimes with a second value after it (Go's decoder
/// stops after the first), or no body at all.
fn finish(u: &mut Unstructured, body: String) -> Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=15)? {
        0 => format!("{body} {{\"HostConfig\":{{\"Privileged\":true}}}}").into_bytes(),
        1 => format!("{{}} {body}").into_bytes(),
        2 => Vec::new(),
        3 => format!("\n{body}\n").into_bytes(),
        _ => body.into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes from a fixed xorshift stream, as libFuzzer would hand them.
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn generated_requests_are_mostly_well_formed() {
        let (mut parsed, mut json, mut total) = (0, 0, 0);
        for seed in 1..500u64 {
            let data = bytes(seed, 512);
            let input = request(&mut Unstructured::new(&data)).expect("512 bytes are enough");
            total += 1;
            for (_, body) in crate::http1::requests(&input) {
                parsed += 1;
                if crate::go::Value::parse_whole(&body).is_some() {
                    json += 1;
                }
            }
            if seed < 4 {
                println!("{}", String::from_utf8_lossy(&input));
            }
        }
        // hyper reads nearly all of them; most bodies are JSON.
        assert!(
            parsed * 10 > total * 9 && json * 2 > parsed,
            "{total} built, {parsed} parsed, {json} JSON"
        );
    }
}
