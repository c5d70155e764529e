//! Bind sources pinned beneath their allowlisted directory, so that no
//! symlink can redirect a bind (issue 10).
//!
//! The policy compares path text; the kernel follows links. A job that can
//! write `/builds` plants `ln -s / /builds/x` and binds `/builds/x`, and
//! dockerd hands the service's root filesystem to the container. A text
//! check at create time cannot fix it (the link can be swapped in between
//! create and start), so the kernel decides instead:
//!
//! 1. the source is opened with `openat2(RESOLVE_BENEATH |
//!    RESOLVE_NO_SYMLINKS)`, one component at a time from the allowlisted
//!    directory: a symlink anywhere on the way is refused, and what is
//!    opened is a descriptor, not a name that can change;
//! 2. the descriptor is bind-mounted (through `/proc/self/fd`) at a pin
//!    under the supervisor's run directory, which no job can reach;
//! 3. the body dockerd gets names the pin instead of the source.
//!
//! Symlinks *inside* a bound directory are not touched and resolve inside
//! the container as before (`node_modules/.bin`, virtualenvs). Pins live as
//! long as a container or volume names them: [`Pins::sweep`] removes the
//! rest, and every pin left by an earlier run is removed at start.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

use crate::head::RequestHead;
use crate::policy::json::{self, Json};
use crate::policy::routes::{self, Route};
use crate::policy::{Policy, Rule};
use crate::readiness::{Readiness, State};
use crate::respond::Refusal;
use crate::upstream;

/// A pin kept less than this long ago is never swept: dockerd's list of
/// containers may not show its container yet.
const SWEEP_GRACE: Duration = Duration::from_secs(60);
/// Most distinct bind sources one request may pin. A `docker run` has a
/// handful; thousands would stall the supervisor's one thread on mount(2)
/// and fill the mount table (issue 10's review).
pub const MAX_PER_REQUEST: usize = 64;
/// Most pins alive at once: far above any CI job, far below the kernel's
/// mount-max (100,000), which the whole service shares.
pub const MAX_LIVE: usize = 4096;

/// Why a bind source could not be pinned. Every one refuses the request.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("bind source {source_path} leads through a symlink or out of {dir}; bind the real directory instead")]
    Symlink { source_path: String, dir: String },
    #[error("bind source {0} does not exist")]
    Missing(String),
    #[error("more than {MAX_PER_REQUEST} distinct bind sources in one request")]
    TooManyInRequest,
    #[error("{MAX_LIVE} bind pins are in use; remove containers or volumes first")]
    TooManyLive,
    #[error("cannot pin bind source {source_path}: {error}")]
    Io {
        source_path: String,
        #[source]
        error: io::Error,
    },
}

/// The pins of this supervisor: where they live and which exist.
pub struct Pins {
    /// A directory of our own (0700); nothing a job binds can reach it.
    dir: PathBuf,
    /// Pin names start with this run's id, so that a name never repeats
    /// across restarts (as PID 1 our pid always is 1): a volume that
    /// outlived a restart must not meet a stranger's pin under its name.
    run: String,
    next: AtomicU64,
    /// Every live pin, and since when dockerd has held it; None while its
    /// request is in flight, which the sweep never touches.
    made: Mutex<HashMap<PathBuf, Option<Instant>>>,
}

/// A descriptor closed on drop; nix 0.29 hands out raw ones and the crate
/// forbids the `unsafe` that `OwnedFd::from_raw_fd` needs.
struct Fd(RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}

impl Pins {
    /// Takes `dir` as the pin directory, removing every pin an earlier run
    /// left there.
    pub fn new(dir: PathBuf) -> io::Result<Pins> {
        if dir.exists() {
            for entry in fs::read_dir(&dir)?.flatten() {
                remove_pin(&entry.path());
            }
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(Pins {
            dir,
            run: format!("{run:x}"),
            next: AtomicU64::new(0),
            made: Mutex::new(HashMap::new()),
        })
    }

    /// Opens `source` (absolute, normalised, inside the allowlisted `dir`)
    /// without following any symlink, and pins what it names. With
    /// `create`, missing directories are made on the way, as dockerd does
    /// for a `Binds` source.
    pub fn pin(&self, dir: &str, source: &str, create: bool) -> Result<PathBuf, PinError> {
        if self.count() >= MAX_LIVE {
            return Err(PinError::TooManyLive);
        }
        let io_err = |error| PinError::Io {
            source_path: source.to_owned(),
            error,
        };
        let fd = open_beneath(dir, source, create)?;
        let stat = fstat(fd.0).map_err(|e| io_err(e.into()))?;
        let is_dir = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        let pin = self
            .dir
            .join(format!("{}-{}", self.run, self.next.fetch_add(1, Relaxed)));
        if is_dir {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&pin)
                .map_err(io_err)?;
        } else {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&pin)
                .map_err(io_err)?;
        }
        let from = format!("/proc/self/fd/{}", fd.0);
        let bound = mount(
            Some(from.as_str()),
            &pin,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        // Private: unmounting the pin later must not reach the source's
        // peers, and mounts made under the source later must not
        // appear in containers through it.
        .and_then(|()| {
            mount(
                None::<&str>,
                &pin,
                None::<&str>,
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                None::<&str>,
            )
        });
        if let Err(e) = bound {
            remove_pin(&pin);
            return Err(io_err(e.into()));
        }
        if let Ok(mut made) = self.made.lock() {
            made.insert(pin.clone(), None);
        }
        Ok(pin)
    }

    /// dockerd accepted the request that made `pins`: from now on they
    /// live as long as something names them.
    pub fn keep(&self, pins: &[PathBuf]) {
        if let Ok(mut made) = self.made.lock() {
            let now = Instant::now();
            for pin in pins {
                if let Some(at) = made.get_mut(pin) {
                    *at = Some(now);
                }
            }
        }
    }

    /// Removes pins, e.g. those made for a create that dockerd refused.
    pub fn release(&self, pins: &[PathBuf]) {
        for pin in pins {
            remove_pin(pin);
            if let Ok(mut made) = self.made.lock() {
                made.remove(pin);
            }
        }
    }

    /// Removes every pin older than the grace that no container or volume
    /// names in `referenced` (their bind sources and volume devices, as
    /// dockerd reports them). Returns how many went.
    pub fn sweep(&self, referenced: &HashSet<String>) -> usize {
        let stale: Vec<PathBuf> = match self.made.lock() {
            Ok(made) => made
                .iter()
                .filter(|(pin, at)| {
                    at.is_some_and(|at| at.elapsed() >= SWEEP_GRACE)
                        && !referenced.contains(&*pin.to_string_lossy())
                })
                .map(|(pin, _)| pin.clone())
                .collect(),
            Err(_) => return 0,
        };
        self.release(&stale);
        stale.len()
    }

    /// Removes every pin, at shutdown.
    pub fn release_all(&self) {
        let all: Vec<PathBuf> = self
            .made
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        self.release(&all);
    }

    /// How many pins exist now.
    pub fn count(&self) -> usize {
        self.made.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Unmounts (lazily: a container may still be starting from it) and
/// removes one pin; a pin that is already gone is fine.
fn remove_pin(pin: &Path) {
    let _ = umount2(pin, MntFlags::MNT_DETACH);
    let removed = fs::remove_dir(pin).or_else(|_| fs::remove_file(pin));
    if let Err(e) = removed {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(pin = %pin.display(), error = %e, "cannot remove bind pin");
        }
    }
}

/// Opens `source` from the allowlisted `dir` one component at a time, with
/// no symlink followed and no step out of `dir` (`..` was normalised away
/// by the policy already; RESOLVE_BENEATH refuses any that remains).
fn open_beneath(dir: &str, source: &str, create: bool) -> Result<Fd, PinError> {
    let symlink = || PinError::Symlink {
        source_path: source.to_owned(),
        dir: dir.to_owned(),
    };
    let io_err = |e: Errno| PinError::Io {
        source_path: source.to_owned(),
        error: e.into(),
    };
    // No O_NOFOLLOW: with it, O_PATH would open a trailing symlink itself
    // instead of failing with ELOOP under RESOLVE_NO_SYMLINKS.
    let path_only = OFlag::O_PATH | OFlag::O_CLOEXEC;
    let strict = ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    // The allowlisted directory is the operator's; it must not be a
    // symlink either, or a job that could replace it would choose it.
    let open_dir = || {
        openat2(
            libc_at_fdcwd(),
            dir,
            OpenHow::new()
                .flags(path_only | OFlag::O_DIRECTORY)
                .resolve(strict),
        )
    };
    let opened = match open_dir() {
        // dockerd would make a missing allowlisted directory for a `Binds`
        // source; so do we. The operator's path, not the job's.
        Err(Errno::ENOENT) if create => fs::create_dir_all(dir)
            .map_err(|error| PinError::Io {
                source_path: source.to_owned(),
                error,
            })
            .and_then(|()| open_dir().map_err(io_err)),
        other => other.map_err(|e| {
            if e == Errno::ELOOP {
                symlink()
            } else {
                io_err(e)
            }
        }),
    };
    let mut cur = Fd(opened?);
    let rest = source.strip_prefix(dir).unwrap_or("");
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let flags = if last {
            path_only
        } else {
            path_only | OFlag::O_DIRECTORY
        };
        let how = || {
            OpenHow::new()
                .flags(flags)
                .resolve(strict | ResolveFlag::RESOLVE_BENEATH)
        };
        let next = match openat2(cur.0, *part, how()) {
            Err(Errno::ENOENT) if create => {
                match mkdirat(Some(cur.0), *part, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(io_err(e)),
                }
                openat2(cur.0, *part, how())
            }
            other => other,
        };
        cur = match next {
            Ok(fd) => Fd(fd),
            Err(Errno::ENOENT) => return Err(PinError::Missing(source.to_owned())),
            // ELOOP: a symlink; ENOTDIR: a symlink to a file where a
            // directory was needed, or a file on the way; EXDEV: out of dir.
            Err(Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR) => return Err(symlink()),
            Err(e) => return Err(io_err(e)),
        };
    }
    Ok(cur)
}

/// `AT_FDCWD`: relative paths from the working directory, absolute as is.
fn libc_at_fdcwd() -> RawFd {
    -100
}

/// A body the policy allowed, with every bind source that the allowlist
/// confines replaced by its pin.
#[derive(Debug)]
pub struct Pinned {
    pub body: bytes::Bytes,
    /// The pins made for it: released when dockerd refuses the request.
    pub made: Vec<PathBuf>,
}

/// Pins the bind sources of an allowed create or volume body. Ok(None) when
/// there is nothing to pin (no confined bind, or the allowlist is `/`).
pub fn pin_body(
    pins: &Pins,
    policy: &Policy,
    head: &RequestHead,
    body: &[u8],
) -> Result<Option<Pinned>, Refusal> {
    let route = routes::classify(&head.method, &head.path);
    let confine_binds = policy.denies(Rule::BindMounts) && !allows_everything(policy);
    let confine_volumes = policy.denies(Rule::VolumeMounts) && !allows_everything(policy);
    if !matches!(
        route,
        Route::ContainerCreate | Route::ContainerStart | Route::VolumeCreate
    ) || !(confine_binds || confine_volumes)
        || body.iter().all(u8::is_ascii_whitespace)
    {
        return Ok(None);
    }
    // The policy read these very bytes strictly a moment ago.
    let Ok(mut doc) = json::parse_strict(body) else {
        return Ok(None);
    };
    let mut job = Job {
        pins,
        policy,
        made: Vec::new(),
        by_source: HashMap::new(),
    };
    let done = match route {
        Route::VolumeCreate if confine_volumes => job.volume_opts(doc.get_mut("DriverOpts")),
        Route::VolumeCreate => Ok(()),
        // dockerd reads HostConfig fields at the top level of a create body
        // too (and a start body is one); a policy file may allow that.
        _ => job
            .host_config(&mut doc, confine_binds, confine_volumes)
            .and_then(|()| match doc.get_mut("HostConfig") {
                Some(hc) => job.host_config(hc, confine_binds, confine_volumes),
                None => Ok(()),
            }),
    };
    if let Err(e) = done {
        pins.release(&job.made);
        return Err(Refusal::Denied {
            rule: Rule::BindMounts.name(),
            reason: format!("policy {}: {e}", policy.name()),
        });
    }
    if job.made.is_empty() {
        return Ok(None);
    }
    Ok(Some(Pinned {
        body: doc.to_bytes().into(),
        made: job.made,
    }))
}

fn allows_everything(policy: &Policy) -> bool {
    policy.allow_binds().iter().any(|d| d == "/")
}

/// One body's pinning: the pins made so far, released if a later one fails.
struct Job<'a> {
    pins: &'a Pins,
    policy: &'a Policy,
    made: Vec<PathBuf>,
    /// Source (normalised) to its pin: a source named twice is pinned once.
    by_source: HashMap<String, String>,
}

impl Job<'_> {
    /// The allowlisted directory `source` lies in, and `source` normalised
    /// as the policy compared it.
    fn confined(&self, source: &str) -> Option<(String, String)> {
        let norm = crate::policy::normalise(source)?;
        self.policy
            .allow_binds()
            .iter()
            .filter(|d| {
                norm == **d
                    || norm
                        .strip_prefix(d.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
            .max_by_key(|d| d.len())
            .map(|d| (d.clone(), norm.clone()))
    }

    /// Replaces `source` (a bind source the policy allowed) by a new pin.
    fn pin(&mut self, source: &str, create: bool) -> Result<Option<String>, PinError> {
        let Some((dir, norm)) = self.confined(source) else {
            return Ok(None);
        };
        if let Some(pin) = self.by_source.get(&norm) {
            return Ok(Some(pin.clone()));
        }
        if self.made.len() >= MAX_PER_REQUEST {
            return Err(PinError::TooManyInRequest);
        }
        let pin = self.pins.pin(&dir, &norm, create)?;
        let name = pin.to_string_lossy().into_owned();
        self.made.push(pin);
        self.by_source.insert(norm, name.clone());
        Ok(Some(name))
    }

    fn host_config(&mut self, hc: &mut Json, binds: bool, volumes: bool) -> Result<(), PinError> {
        if binds {
            if let Some(Json::Array(items)) = hc.get_mut("Binds") {
                for item in items {
                    let Json::String(bind) = item else { continue };
                    // moby's Linux parser: the source precedes the first ':'
                    // and is a bind when absolute.
                    let Some((source, rest)) = bind.split_once(':') else {
                        continue;
                    };
                    if !source.starts_with('/') {
                        continue;
                    }
                    if let Some(pin) = self.pin(source, true)? {
                        *bind = format!("{pin}:{rest}");
                    }
                }
            }
        }
        let Some(Json::Array(mounts)) = hc.get_mut("Mounts") else {
            return Ok(());
        };
        for m in mounts {
            let ty = match m.get("Type") {
                Some(Json::String(t)) => t.clone(),
                _ => continue,
            };
            match ty.as_str() {
                "bind" if binds => {
                    if let Some(Json::String(source)) = m.get_mut("Source") {
                        // A bind mount's source must exist (dockerd refuses).
                        if let Some(pin) = self.pin(&source.clone(), false)? {
                            *source = pin;
                        }
                    }
                }
                "volume" if volumes => {
                    let opts = m
                        .get_mut("VolumeOptions")
                        .and_then(|vo| vo.get_mut("DriverConfig"))
                        .and_then(|dc| dc.get_mut("Options"));
                    self.volume_opts(opts)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A local volume's `o=bind,device=PATH`: dockerd mounts `device` at
    /// every start, following links, so the volume is made on a pin.
    fn volume_opts(&mut self, opts: Option<&mut Json>) -> Result<(), PinError> {
        let Some(Json::Object(members)) = opts else {
            return Ok(());
        };
        let is_bind = members.iter().any(|(k, v)| {
            k == "o"
                && matches!(v, Json::String(o) if o.split(',').any(|f| f == "bind" || f == "rbind"))
        });
        if !is_bind {
            return Ok(());
        }
        for (k, v) in members.iter_mut() {
            if k != "device" {
                continue;
            }
            if let Json::String(device) = v {
                if let Some(pin) = self.pin(&device.clone(), false)? {
                    *device = pin;
                }
            }
        }
        Ok(())
    }
}

/// How often pins no container or volume names are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Sweeps pins while the engine runs; owned by [`crate::serve`], which
/// aborts it at shutdown.
pub async fn sweep_loop(pins: Arc<Pins>, socket: PathBuf, readiness: Readiness) {
    let limit = Duration::from_secs(10);
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        if readiness.state() != State::Ready || pins.count() == 0 {
            continue;
        }
        let named = async {
            let containers = upstream::get_json(&socket, "/containers/json?all=1", limit).await?;
            let volumes = upstream::get_json(&socket, "/volumes", limit).await?;
            Ok::<_, upstream::UpstreamError>(referenced(&containers, &volumes))
        };
        match named.await {
            Ok(named) => {
                let gone = pins.sweep(&named);
                if gone > 0 {
                    tracing::debug!(removed = gone, left = pins.count(), "bind pins swept");
                }
            }
            // Keep every pin when unsure: a leak until the next sweep beats
            // a container whose bind vanished.
            Err(e) => tracing::debug!(error = %e, "cannot list what names the bind pins"),
        }
    }
}

/// Every bind source and volume device dockerd knows of now: what keeps a
/// pin alive. From `GET /containers/json?all=1` and `GET /volumes`.
pub fn referenced(containers: &serde_json::Value, volumes: &serde_json::Value) -> HashSet<String> {
    let mut out = HashSet::new();
    for c in containers.as_array().into_iter().flatten() {
        for m in c
            .get("Mounts")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(s) = m.get("Source").and_then(|s| s.as_str()) {
                out.insert(s.to_owned());
            }
        }
    }
    for v in volumes
        .get("Volumes")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(d) = v
            .get("Options")
            .and_then(|o| o.get("device"))
            .and_then(|d| d.as_str())
        {
            out.insert(d.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, String) {
        let t = tempfile::tempdir().unwrap();
        let builds = t.path().join("builds");
        fs::create_dir_all(builds.join("real/sub")).unwrap();
        fs::write(builds.join("real/file"), "x").unwrap();
        std::os::unix::fs::symlink("/", builds.join("root")).unwrap();
        std::os::unix::fs::symlink("real", builds.join("rel")).unwrap();
        std::os::unix::fs::symlink("real/inner-link-target", builds.join("real/sub/inner"))
            .unwrap();
        let dir = builds.to_string_lossy().into_owned();
        (t, dir)
    }

    #[test]
    fn a_path_without_symlinks_opens_and_any_symlink_on_the_way_is_refused() {
        let (_t, dir) = tree();
        for ok in ["real", "real/sub", "real/file", ""] {
            let source = if ok.is_empty() {
                dir.clone()
            } else {
                format!("{dir}/{ok}")
            };
            assert!(open_beneath(&dir, &source, false).is_ok(), "{ok}");
        }
        for link in ["root", "root/etc", "rel", "rel/sub", "real/sub/inner"] {
            let r = open_beneath(&dir, &format!("{dir}/{link}"), false);
            assert!(
                matches!(r, Err(PinError::Symlink { .. })),
                "{link}: {:?}",
                r.err()
            );
        }
        assert!(matches!(
            open_beneath(&dir, &format!("{dir}/nope"), false),
            Err(PinError::Missing(_))
        ));
    }

    #[test]
    fn missing_directories_are_made_without_following_links() {
        let (_t, dir) = tree();
        assert!(open_beneath(&dir, &format!("{dir}/real/new/deeper"), true).is_ok());
        assert!(Path::new(&format!("{dir}/real/new/deeper")).is_dir());
        // A link on the way is still refused, and nothing is made through it.
        let r = open_beneath(&dir, &format!("{dir}/root/tmp/dsv-should-not-exist"), true);
        assert!(matches!(r, Err(PinError::Symlink { .. })));
        assert!(!Path::new("/tmp/dsv-should-not-exist").exists());
    }

    #[test]
    fn the_allowlisted_directory_itself_must_not_be_a_symlink() {
        let (t, dir) = tree();
        let alias = t.path().join("alias");
        std::os::unix::fs::symlink(&dir, &alias).unwrap();
        let alias = alias.to_string_lossy().into_owned();
        assert!(matches!(
            open_beneath(&alias, &format!("{alias}/real"), false),
            Err(PinError::Symlink { .. })
        ));
    }

    fn create() -> RequestHead {
        RequestHead {
            method: hyper::Method::POST,
            version: Some("1.41".into()),
            path: "/containers/create".into(),
            query: None,
            upgrade: None,
        }
    }

    /// Needs root (mount); the suite runs as root.
    #[test]
    fn an_allowed_body_names_pins_that_show_the_real_directory_and_a_link_is_refused() {
        let (t, dir) = tree();
        let pins = Pins::new(t.path().join("pins")).unwrap();
        let policy = Policy::load("ci-safe", Some(&dir)).unwrap();
        let body = format!(
            r#"{{"Image":"x","HostConfig":{{"Binds":["{dir}/real:/w:ro","named:/n"],"Mounts":[{{"Type":"bind","Source":"{dir}/real/file","Target":"/f"}}]}}}}"#
        );
        let pinned = pin_body(&pins, &policy, &create(), body.as_bytes())
            .unwrap()
            .expect("pinned");
        assert_eq!(pinned.made.len(), 2);
        let doc = json::parse_strict(&pinned.body).unwrap();
        let hc = doc.get("HostConfig").unwrap();
        let Some(Json::Array(binds)) = hc.get("Binds") else {
            panic!()
        };
        let pin = &pinned.made[0];
        assert_eq!(binds[0], Json::String(format!("{}:/w:ro", pin.display())));
        assert_eq!(
            binds[1],
            Json::String("named:/n".into()),
            "named volumes are not binds"
        );
        assert!(pin.join("file").is_file(), "the pin shows the directory");
        assert_eq!(
            fs::read_to_string(&pinned.made[1]).unwrap(),
            "x",
            "a file pins as a file"
        );
        assert_eq!(pins.count(), 2);
        pins.release(&pinned.made);
        assert!(!pin.exists() && pins.count() == 0);

        let body = format!(r#"{{"HostConfig":{{"Binds":["{dir}/real:/w","{dir}/root:/h"]}}}}"#);
        let refused = pin_body(&pins, &policy, &create(), body.as_bytes());
        assert!(
            matches!(
                refused,
                Err(Refusal::Denied {
                    rule: "bind_mounts",
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(
            pins.count(),
            0,
            "the first bind's pin went with the refusal"
        );
        assert_eq!(fs::read_dir(t.path().join("pins")).unwrap().count(), 0);
    }

    #[test]
    fn one_request_pins_each_source_once_and_at_most_a_bounded_number() {
        let (t, dir) = tree();
        let pins = Pins::new(t.path().join("pins")).unwrap();
        let policy = Policy::load("ci-safe", Some(&dir)).unwrap();
        let binds = |n: usize, distinct: bool| {
            let list: Vec<String> = (0..n)
                .map(|i| {
                    if distinct {
                        format!(r#""{dir}/real/d{i}:/d{i}""#)
                    } else {
                        format!(r#""{dir}/real:/d{i}""#)
                    }
                })
                .collect();
            format!(r#"{{"HostConfig":{{"Binds":[{}]}}}}"#, list.join(","))
        };
        let same = binds(1000, false);
        let pinned = pin_body(&pins, &policy, &create(), same.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(pinned.made.len(), 1, "one source, one pin");
        pins.release(&pinned.made);
        let many = binds(MAX_PER_REQUEST + 1, true);
        let refused = pin_body(&pins, &policy, &create(), many.as_bytes());
        assert!(
            matches!(refused, Err(Refusal::Denied { .. })),
            "{refused:?}"
        );
        assert_eq!(
            pins.count(),
            0,
            "the pins made before the cap went with the refusal"
        );
    }

    #[test]
    fn the_sweep_never_takes_a_pin_whose_request_is_in_flight() {
        let (t, dir) = tree();
        let pins = Pins::new(t.path().join("pins")).unwrap();
        let pin = pins.pin(&dir, &format!("{dir}/real"), false).unwrap();
        // Pretend the grace is long past: in flight, it is still not swept.
        assert_eq!(pins.sweep(&HashSet::new()), 0);
        pins.keep(std::slice::from_ref(&pin));
        if let Ok(mut made) = pins.made.lock() {
            made.insert(pin.clone(), Instant::now().checked_sub(SWEEP_GRACE));
        }
        let named: HashSet<String> = [pin.to_string_lossy().into_owned()].into();
        assert_eq!(pins.sweep(&named), 0, "named by a container");
        assert_eq!(
            pins.sweep(&HashSet::new()),
            1,
            "kept, old and named by nothing"
        );
        assert!(!pin.exists());
    }

    #[test]
    fn sources_still_named_by_dockerd_keep_their_pins() {
        let containers = serde_json::json!([{"Mounts": [{"Type": "bind", "Source": "/run/p/1"}]}, {"Mounts": null}]);
        let volumes = serde_json::json!({"Volumes": [{"Options": {"o": "bind", "device": "/run/p/2"}}, {"Options": null}]});
        let r = referenced(&containers, &volumes);
        assert!(r.contains("/run/p/1") && r.contains("/run/p/2") && r.len() == 2);
    }
}
