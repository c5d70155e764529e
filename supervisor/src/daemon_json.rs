//! Our settings for dockerd, given as flags or, when daemon.json already sets the key, merged
//! into a generated copy of daemon.json.
//!
//! dockerd refuses to start when one directive comes both as a flag and from its config file
//! ("the following directives are specified both as a flag and in the configuration file"),
//! and a user's daemon.json must keep working. So per key:
//!
//! - the file does not set it: we pass a flag (`--registry-mirror X` per item, ...);
//! - the file sets it: we write the whole file plus our change to a generated path and point
//!   dockerd there with `--config-file` (replacing the user's `--config-file`, if any).
//!
//! Precedence: lists (`registry-mirrors`, `insecure-registries`) are unions: the file's items,
//! then the user's flags, then ours, without duplicates. Scalars (`storage-driver`, `mtu`, `cgroup-parent`):
//! the user's own dockerd flag wins over everything; then a value the user set explicitly in
//! our settings (an explicit [`Scalar`]) wins over the file, with a warning, because they asked
//! for it by name; then the file wins over a value we merely detected.
//!
//! BuildKit entitlements ([`Entitlement`]) have no dockerd flag: when the request policy denies
//! one, `builder.entitlements.<key>: false` always goes into the generated copy, whatever the
//! file says (a `true` there is overridden with a warning), and we never write `true`. So
//! dockerd reads our denial from a file of ours, never from one a job could still change.
//!
//! One cost of the generated copy: dockerd reloads its config file on SIGHUP, and edits to the
//! original file are not seen until the supervisor regenerates the copy at the next start.
//!
//! [`plan`] decides without writing anything; [`apply`] writes the generated file.

use crate::atomic;
use crate::dockerd_flags::{flag_value, flag_values, remove_flag};
use std::fmt;
use std::fs::{self};
use std::io;
use std::path::{Path, PathBuf};

use proxy::policy::json::go_equal_fold_ascii;
use serde_json::{Map, Value};

/// dockerd's config file when no `--config-file` is given.
pub const DEFAULT_CONFIG: &str = "/etc/docker/daemon.json";
pub const CONFIG_FLAG: &str = "--config-file";

/// A config directive: its daemon.json key and its dockerd flag.
#[derive(Debug, Clone, Copy)]
struct Directive {
    key: &'static str,
    flag: &'static str,
    short: Option<&'static str>,
}

impl Directive {
    /// A directive whose flag has no short form.
    const fn long(key: &'static str, flag: &'static str) -> Directive {
        Directive {
            key,
            flag,
            short: None,
        }
    }
}

const REGISTRY_MIRRORS: Directive = Directive {
    key: "registry-mirrors",
    flag: "--registry-mirror",
    short: None,
};
const INSECURE_REGISTRIES: Directive = Directive {
    key: "insecure-registries",
    flag: "--insecure-registry",
    short: None,
};
const STORAGE_DRIVER: Directive = Directive {
    key: "storage-driver",
    flag: "--storage-driver",
    short: Some("-s"),
};
const MTU: Directive = Directive {
    key: "mtu",
    flag: "--mtu",
    short: None,
};
/// Where dockerd puts its containers' cgroups (`cgroup.rs` nesting outside a namespace root).
const CGROUP_PARENT: Directive = Directive::long("cgroup-parent", "--cgroup-parent");
/// dockerd 24+: options for every network created with a driver (`daemon/network.go`).
const DEFAULT_NETWORK_OPTS: Directive =
    Directive::long("default-network-opts", "--default-network-opt");
/// The bridge driver's option for a network's MTU, and the driver's name there.
pub const BRIDGE_MTU_OPTION: &str = "com.docker.network.driver.mtu";
const BRIDGE: &str = "bridge";

/// A BuildKit entitlement that dockerd grants or not by daemon.json's `builder.entitlements`.
/// dockerd grants `network.host` unless told otherwise and `security.insecure` only when told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    /// `network.host`: build steps in dockerd's own network namespace.
    NetworkHost,
    /// `security.insecure`: build steps without the sandbox (`RUN --security=insecure`).
    SecurityInsecure,
}

impl Entitlement {
    /// Its key under `builder.entitlements`.
    pub fn key(self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "network-host",
            Entitlement::SecurityInsecure => "security-insecure",
        }
    }

    /// Its whole path in daemon.json, for messages.
    fn shown(self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "builder.entitlements.network-host",
            Entitlement::SecurityInsecure => "builder.entitlements.security-insecure",
        }
    }

    /// BuildKit's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "network.host",
            Entitlement::SecurityInsecure => "security.insecure",
        }
    }
}

/// daemon.json's `builder` key and its `entitlements`; dockerd's Go decoder matches both (and
/// the entitlement keys) case-insensitively, as the fields `Builder` and `Entitlements`.
const BUILDER: &str = "builder";
const ENTITLEMENTS: &str = "entitlements";
const BUILDER_ENTITLEMENTS: &str = "builder.entitlements";

/// A single-valued setting and how sure we are of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar<T> {
    pub value: T,
    /// Set by the user in our settings (wins over daemon.json), rather than detected or
    /// defaulted by us (loses to daemon.json).
    pub explicit: bool,
}

impl<T> Scalar<T> {
    pub fn new(value: T, explicit: bool) -> Self {
        Scalar { value, explicit }
    }
}

/// The settings we want dockerd to run with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub registry_mirrors: Vec<String>,
    pub insecure_registries: Vec<String>,
    pub storage_driver: Option<Scalar<String>>,
    pub mtu: Option<Scalar<u32>>,
    /// The MTU of bridge networks created later (`docker network create`,
    /// compose), by `default-network-opts`: only for dockerd 24 and later.
    pub network_mtu: Option<Scalar<u32>>,
    /// The containers' cgroup parent: our own cgroup, when the service shares the host's
    /// cgroup namespace (`cgroup.rs`).
    pub cgroup_parent: Option<Scalar<String>>,
    /// BuildKit entitlements dockerd must not grant.
    pub deny_entitlements: Vec<Entitlement>,
}

/// The user's dockerd config file as found.
#[derive(Debug, Clone, PartialEq)]
pub struct UserConfig {
    pub path: PathBuf,
    /// The path came from `--config-file` in the dockerd args.
    pub from_flag: bool,
    /// `None` when the default file does not exist.
    pub object: Option<Map<String, Value>>,
}

impl UserConfig {
    /// The value the file sets for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.object.as_ref()?.get(key)
    }
}

/// The merged copy of the user's config that dockerd should read instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub path: PathBuf,
    pub value: Value,
}

/// What to change in dockerd's args and what to write.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Flags to add, e.g. `["--registry-mirror", "https://m.example", "--mtu", "1450"]`.
    pub flags: Vec<String>,
    /// A config file to write with [`apply`]; dockerd must then get `--config-file <path>`.
    pub config_file: Option<Generated>,
    /// The user's args hold a `--config-file` that [`Plan::dockerd_args`] replaces.
    pub replace_config_flag: bool,
    /// Decisions worth an info line.
    pub notes: Vec<String>,
    /// An explicit setting of ours overrode the file, or was overridden: warn.
    pub warnings: Vec<String>,
}

impl Plan {
    /// `args` (the dockerd args so far) with the plan applied: the user's `--config-file`
    /// dropped when a generated file replaces it, then our flags, then `--config-file`.
    pub fn dockerd_args(&self, args: &[String]) -> Vec<String> {
        let mut out = match &self.config_file {
            Some(_) => remove_flag(args, CONFIG_FLAG),
            None => args.to_vec(),
        };
        out.extend(self.flags.iter().cloned());
        if let Some(g) = &self.config_file {
            out.push(CONFIG_FLAG.to_owned());
            out.push(g.path.display().to_string());
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonJsonError {
    #[error("cannot read dockerd config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("dockerd config {} (from --config-file) does not exist; create it or drop --config-file", path.display())]
    Missing { path: PathBuf },
    #[error("dockerd config {} is not valid JSON; fix or remove it", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("dockerd config {} must hold a JSON object ({{...}}); fix or remove it", path.display())]
    NotObject { path: PathBuf },
    #[error("\"{key}\" in dockerd config {} must be {expected}; fix it", path.display())]
    BadKey {
        path: PathBuf,
        key: &'static str,
        expected: &'static str,
    },
    #[error("dockerd config {} spells \"{key}\" more than once ({}), and dockerd reads them as one key; keep one", path.display(), spellings.join(", "))]
    Ambiguous {
        path: PathBuf,
        key: &'static str,
        spellings: Vec<String>,
    },
    #[error("cannot write the generated dockerd config {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads the config file dockerd will use: `--config-file` from `user_args`, else `default`.
/// A missing default file is fine; a missing `--config-file` is not (dockerd refuses it too).
pub fn load(user_args: &[String], default: &Path) -> Result<UserConfig, DaemonJsonError> {
    let (path, from_flag) = match flag_value(user_args, CONFIG_FLAG, None) {
        Some(p) => (PathBuf::from(p), true),
        None => (default.to_path_buf(), false),
    };
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if from_flag {
                return Err(DaemonJsonError::Missing { path });
            }
            return Ok(UserConfig {
                path,
                from_flag,
                object: None,
            });
        }
        Err(source) => return Err(DaemonJsonError::Read { path, source }),
    };
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(source) => return Err(DaemonJsonError::Parse { path, source }),
    };
    match value {
        Value::Object(object) => Ok(UserConfig {
            path,
            from_flag,
            object: Some(object),
        }),
        _ => Err(DaemonJsonError::NotObject { path }),
    }
}

/// The effective value of a directive as the user configured it: their dockerd flag, else the
/// config file's key, else `None`. Flags come back as JSON strings.
pub fn configured(user_args: &[String], config: &UserConfig, key: &str) -> Option<Value> {
    let directive = [REGISTRY_MIRRORS, INSECURE_REGISTRIES, STORAGE_DRIVER, MTU]
        .into_iter()
        .find(|d| d.key == key);
    if let Some(d) = directive {
        if let Some(v) = flag_value(user_args, d.flag, d.short) {
            return Some(Value::String(v));
        }
    }
    config.get(key).cloned()
}

/// Whether dockerd keeps containers running across its own restarts: the
/// `--live-restore` flag, else the config file's `live-restore` (when the
/// file could be read).
pub fn live_restore(user_args: &[String], config: Option<&UserConfig>) -> bool {
    crate::dockerd_flags::bool_flag(user_args, "--live-restore")
        .or_else(|| config?.get("live-restore").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// The storage driver the user set in their dockerd flags or config file; this is
/// `storage::Request::explicit`.
pub fn explicit_storage_driver(
    user_args: &[String],
    config: &UserConfig,
) -> Result<Option<String>, DaemonJsonError> {
    match configured(user_args, config, STORAGE_DRIVER.key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(DaemonJsonError::BadKey {
            path: config.path.clone(),
            key: STORAGE_DRIVER.key,
            expected: "a string",
        }),
    }
}

fn string_list(v: &Value, path: &Path, key: &'static str) -> Result<Vec<String>, DaemonJsonError> {
    let bad = || DaemonJsonError::BadKey {
        path: path.to_path_buf(),
        key,
        expected: "a list of strings",
    };
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|item| item.as_str().map(str::to_owned).ok_or_else(bad))
        .collect()
}

/// `ours` without duplicates and without the items already in `have`, in order.
fn missing_from(have: &[String], ours: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in ours {
        if !have.contains(item) && !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

/// A scalar setting's JSON form and its text for flags and logs.
trait ScalarValue: fmt::Display + PartialEq + Sized {
    const EXPECTED: &'static str;
    fn from_json(v: &Value) -> Option<Self>;
    fn to_json(&self) -> Value;
}

impl ScalarValue for String {
    const EXPECTED: &'static str = "a string";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_str().map(str::to_owned)
    }
    fn to_json(&self) -> Value {
        Value::String(self.clone())
    }
}

impl ScalarValue for u32 {
    const EXPECTED: &'static str = "a whole number";
    fn from_json(v: &Value) -> Option<Self> {
        v.as_u64().and_then(|n| u32::try_from(n).ok())
    }
    fn to_json(&self) -> Value {
        Value::from(*self)
    }
}

/// What every directive's planning reads: the user's dockerd flags and their
/// config file's path, as data and as shown in messages.
struct Context<'a> {
    user_args: &'a [String],
    shown: &'a str,
    path: &'a Path,
}

/// Builds the plan from the file as [`load`]ed. Nothing is written; see
/// [`apply`].
pub fn plan(
    wanted: &Wanted,
    user_args: &[String],
    config: &UserConfig,
    generated_path: &Path,
) -> Result<Plan, DaemonJsonError> {
    let path = config.path.clone();
    let shown = path.display().to_string();
    let mut object = config.object.clone().unwrap_or_default();
    let mut out = Plan::default();

    let cx = Context {
        user_args,
        shown: &shown,
        path: &path,
    };
    let mut changed = plan_lists(wanted, &cx, &mut object, generated_path, &mut out)?;
    for (d, ours) in [
        (STORAGE_DRIVER, wanted.storage_driver.as_ref()),
        (CGROUP_PARENT, wanted.cgroup_parent.as_ref()),
    ] {
        changed |= plan_scalar(d, ours, &cx, &mut object, &mut out)?;
    }
    changed |= plan_scalar(MTU, wanted.mtu.as_ref(), &cx, &mut object, &mut out)?;
    if let Some(mtu) = &wanted.network_mtu {
        changed |= plan_network_mtu(mtu, &cx, &mut object, &mut out)?;
    }

    changed |= plan_entitlements(
        &wanted.deny_entitlements,
        &mut object,
        &shown,
        &path,
        generated_path,
        &mut out,
    )?;

    if changed {
        out.replace_config_flag = config.from_flag;
        out.config_file = Some(Generated {
            path: generated_path.to_path_buf(),
            value: Value::Object(object),
        });
    }
    Ok(out)
}

/// The list directives (unions); returns whether `object` changed. See the
/// module docs.
fn plan_lists(
    wanted: &Wanted,
    cx: &Context<'_>,
    object: &mut Map<String, Value>,
    generated_path: &Path,
    out: &mut Plan,
) -> Result<bool, DaemonJsonError> {
    let mut changed = false;
    let shown = cx.shown;
    for (d, ours) in [
        (REGISTRY_MIRRORS, &wanted.registry_mirrors),
        (INSECURE_REGISTRIES, &wanted.insecure_registries),
    ] {
        match object.get(d.key) {
            Some(v) => {
                let mut list = string_list(v, cx.path, d.key)?;
                let add = missing_from(&list, ours);
                if !add.is_empty() {
                    out.notes.push(format!(
                        "{}: {shown} already sets it, so {} merged into {} instead of passed as flags",
                        d.key,
                        add.join(", "),
                        generated_path.display()
                    ));
                    list.extend(add);
                    object.insert(d.key.to_owned(), list.into());
                    changed = true;
                }
            }
            None => {
                // Repeating a list flag is fine for dockerd; only skip exact repeats.
                let theirs = flag_values(cx.user_args, d.flag, d.short);
                for item in missing_from(&theirs, ours) {
                    out.flags.push(d.flag.to_owned());
                    out.flags.push(item);
                }
            }
        }
    }
    Ok(changed)
}

/// One scalar directive; returns whether `object` changed. See the module docs for precedence.
fn plan_scalar<T: ScalarValue>(
    d: Directive,
    ours: Option<&Scalar<T>>,
    cx: &Context<'_>,
    object: &mut Map<String, Value>,
    out: &mut Plan,
) -> Result<bool, DaemonJsonError> {
    let Some(ours) = ours else {
        return Ok(false);
    };
    let shown = cx.shown;
    let key = d.key;
    if let Some(theirs) = flag_value(cx.user_args, d.flag, d.short) {
        if theirs != ours.value.to_string() {
            let msg = format!(
                "{key}: dockerd flag {} {theirs} wins over our setting {}",
                d.flag, ours.value
            );
            if ours.explicit {
                out.warnings.push(msg);
            } else {
                out.notes.push(msg);
            }
        }
        return Ok(false);
    }
    let Some(file_value) = object.get(key) else {
        out.flags.push(d.flag.to_owned());
        out.flags.push(ours.value.to_string());
        return Ok(false);
    };
    let theirs = T::from_json(file_value).ok_or_else(|| DaemonJsonError::BadKey {
        path: cx.path.to_path_buf(),
        key,
        expected: T::EXPECTED,
    })?;
    if theirs == ours.value {
        return Ok(false);
    }
    if !ours.explicit {
        out.notes.push(format!(
            "{key}: keeping {theirs} from {shown} over the detected {}",
            ours.value
        ));
        return Ok(false);
    }
    out.warnings.push(format!(
        "{key}: our setting {} replaces {theirs} from {shown} in the generated config",
        ours.value
    ));
    object.insert(key.to_owned(), ours.value.to_json());
    Ok(true)
}

/// `default-network-opts.bridge."com.docker.network.driver.mtu"`; returns whether `object`
/// changed. A flag when the file has no `default-network-opts` (or the user gave the flag,
/// which dockerd would not take next to the key in the file), else merged into the copy; the
/// scalar precedence of the module docs for a value already there.
fn plan_network_mtu(
    ours: &Scalar<u32>,
    cx: &Context<'_>,
    object: &mut Map<String, Value>,
    out: &mut Plan,
) -> Result<bool, DaemonJsonError> {
    let (d, shown) = (DEFAULT_NETWORK_OPTS, cx.shown);
    let want = ours.value.to_string();
    let shown_key = format!("{}.{BRIDGE}.{BRIDGE_MTU_OPTION}", d.key);
    let flags = flag_values(cx.user_args, d.flag, d.short);
    let key = go_key(object, d.key, d.key, cx.path)?;
    if !flags.is_empty() || !object.contains_key(&key) {
        let prefix = format!("{BRIDGE}={BRIDGE_MTU_OPTION}=");
        match flags.iter().rev().find_map(|f| f.strip_prefix(&prefix)) {
            Some(theirs) if theirs != want => out.notes.push(format!(
                "{shown_key}: dockerd flag {} {prefix}{theirs} wins over our {want}",
                d.flag
            )),
            Some(_) => {}
            None => {
                out.flags.push(d.flag.to_owned());
                out.flags.push(format!("{prefix}{want}"));
            }
        }
        return Ok(false);
    }
    let bad = |expected| DaemonJsonError::BadKey {
        path: cx.path.to_path_buf(),
        key: d.key,
        expected,
    };
    let opts = section(object, d.key, d.key, cx.path)?;
    // Driver names and option keys are map keys: Go matches them exactly.
    let bridge = opts.entry(BRIDGE).or_insert(Value::Null);
    if bridge.is_null() {
        *bridge = Value::Object(Map::new());
    }
    let bridge = bridge
        .as_object_mut()
        .ok_or_else(|| bad("an object of objects of strings"))?;
    match bridge.get(BRIDGE_MTU_OPTION) {
        None => out.notes.push(format!(
            "{shown_key}: {shown} already sets {}, so {want} is merged into the generated config",
            d.key
        )),
        Some(Value::String(theirs)) if *theirs == want => return Ok(false),
        Some(Value::String(theirs)) if !ours.explicit => {
            out.notes.push(format!(
                "{shown_key}: keeping {theirs} from {shown} over the detected {want}"
            ));
            return Ok(false);
        }
        Some(Value::String(theirs)) => out.warnings.push(format!(
            "{shown_key}: our setting {want} replaces {theirs} from {shown} in the generated config"
        )),
        Some(_) => return Err(bad("an object of objects of strings")),
    }
    bridge.insert(BRIDGE_MTU_OPTION.to_owned(), Value::String(want));
    Ok(true)
}

/// Sets every denied entitlement to `false` under `builder.entitlements`, keeping everything else
/// in `builder`; returns whether `object` must be written (always, when something is denied).
fn plan_entitlements(
    deny: &[Entitlement],
    object: &mut Map<String, Value>,
    shown: &str,
    path: &Path,
    generated_path: &Path,
    out: &mut Plan,
) -> Result<bool, DaemonJsonError> {
    if deny.is_empty() {
        return Ok(false);
    }
    let builder = section(object, BUILDER, BUILDER, path)?;
    let entitlements = section(builder, ENTITLEMENTS, BUILDER_ENTITLEMENTS, path)?;
    for e in deny {
        let key = go_key(entitlements, e.key(), e.shown(), path)?;
        match entitlements.get(&key) {
            None | Some(Value::Bool(false)) => {}
            Some(theirs) => out.warnings.push(format!(
                "{BUILDER_ENTITLEMENTS}.{key}: {shown} sets {theirs}, but the request policy denies {}; {} sets it to false",
                e.name(),
                generated_path.display()
            )),
        }
        entitlements.insert(key, Value::Bool(false));
    }
    out.notes.push(format!(
        "{BUILDER_ENTITLEMENTS}: dockerd grants no {} to builds, as the request policy says ({})",
        deny.iter()
            .map(|e| e.name())
            .collect::<Vec<_>>()
            .join(" or "),
        generated_path.display()
    ));
    Ok(true)
}

/// The object under `field` in `object` (created when absent or null), found as dockerd's Go
/// decoder finds it; `shown` names it in errors.
fn section<'a>(
    object: &'a mut Map<String, Value>,
    field: &'static str,
    shown: &'static str,
    path: &Path,
) -> Result<&'a mut Map<String, Value>, DaemonJsonError> {
    let key = go_key(object, field, shown, path)?;
    let value = object.entry(key).or_insert(Value::Null);
    if value.is_null() {
        *value = Value::Object(Map::new());
    }
    value
        .as_object_mut()
        .ok_or_else(|| DaemonJsonError::BadKey {
            path: path.to_path_buf(),
            key: shown,
            expected: "an object",
        })
}

/// The key in `object` that dockerd's Go decoder reads as `field` (it folds case, `K` and `ſ`),
/// or `field` itself when none does. Two spellings of one key would be merged by Go in document
/// order; rather than copy that, refuse them.
fn go_key(
    object: &Map<String, Value>,
    field: &'static str,
    shown: &'static str,
    path: &Path,
) -> Result<String, DaemonJsonError> {
    let mut found = object.keys().filter(|k| go_equal_fold_ascii(k, field));
    match (found.next(), found.next()) {
        (None, _) => Ok(field.to_owned()),
        (Some(k), None) => Ok(k.clone()),
        (Some(a), Some(b)) => Err(DaemonJsonError::Ambiguous {
            path: path.to_path_buf(),
            key: shown,
            spellings: [a, b].into_iter().chain(found).cloned().collect(),
        }),
    }
}

/// Writes the generated config, if the plan has one: to a temp file beside it, then renamed
/// over, so dockerd never reads half a file.
pub fn apply(plan: &Plan) -> Result<(), DaemonJsonError> {
    let Some(g) = &plan.config_file else {
        return Ok(());
    };
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DaemonJsonError::Write { path, source }
    };
    if let Some(dir) = g.path.parent() {
        fs::create_dir_all(dir).map_err(write_err(dir))?;
    }
    let mut text =
        serde_json::to_vec_pretty(&g.value).map_err(|e| write_err(&g.path)(io::Error::other(e)))?;
    text.push(b'\n');
    // The original may name TLS keys or auth plugins; only root (dockerd) needs to read it.
    atomic::write(&g.path, &text, 0o600).map_err(write_err(&g.path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde_json::json;

    use super::*;
    use crate::dockerd_flags::flag_values;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(ToString::to_string).collect()
    }

    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Self {
            Dir {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn config(&self) -> PathBuf {
            self.dir.path().join("etc/docker/daemon.json")
        }
        fn generated(&self) -> PathBuf {
            self.dir.path().join("run/dind-supervisor/daemon.json")
        }
        fn write_config(&self, text: &str) {
            fs::create_dir_all(self.config().parent().unwrap()).unwrap();
            fs::write(self.config(), text).unwrap();
        }
        fn plan(&self, wanted: &Wanted, user_args: &[String]) -> Result<Plan, DaemonJsonError> {
            plan(
                wanted,
                user_args,
                &load(user_args, &self.config())?,
                &self.generated(),
            )
        }
    }

    fn mirrors(m: &[&str]) -> Wanted {
        Wanted {
            registry_mirrors: args(m),
            ..Wanted::default()
        }
    }

    #[test]
    fn flags_only_when_there_is_no_config_file() {
        let d = Dir::new();
        let wanted = Wanted {
            registry_mirrors: args(&["https://m1", "https://m2", "https://m1"]),
            insecure_registries: args(&["reg:5000"]),
            storage_driver: Some(Scalar::new("vfs".into(), false)),
            mtu: Some(Scalar::new(1450, false)),
            network_mtu: None,
            cgroup_parent: None,
            deny_entitlements: Vec::new(),
        };
        let p = d.plan(&wanted, &[]).unwrap();
        assert_eq!(
            p.flags,
            args(&[
                "--registry-mirror",
                "https://m1",
                "--registry-mirror",
                "https://m2",
                "--insecure-registry",
                "reg:5000",
                "--storage-driver",
                "vfs",
                "--mtu",
                "1450",
            ])
        );
        assert_eq!(p.config_file, None);
        assert!(!p.replace_config_flag);
        apply(&p).unwrap();
        assert!(!d.generated().exists());
    }

    fn network_mtu(n: u32, explicit: bool) -> Wanted {
        Wanted {
            network_mtu: Some(Scalar::new(n, explicit)),
            ..Wanted::default()
        }
    }

    #[test]
    fn network_mtu_is_a_default_network_opt_flag_without_the_key_in_the_file() {
        let d = Dir::new();
        let p = d.plan(&network_mtu(1400, false), &[]).unwrap();
        assert_eq!(
            p.flags,
            args(&[
                "--default-network-opt",
                "bridge=com.docker.network.driver.mtu=1400"
            ])
        );
        assert_eq!(p.config_file, None);

        // The user's flag for another driver or option: ours joins it (dockerd would refuse
        // the key in a file next to the flag).
        d.write_config(r#"{"default-network-opts": {"bridge": {"a": "b"}}}"#);
        let theirs = args(&["--default-network-opt=overlay=x=y"]);
        let p = d.plan(&network_mtu(1400, false), &theirs).unwrap();
        assert_eq!(p.flags.len(), 2);
        assert_eq!(p.config_file, None);

        // Their own bridge MTU flag wins.
        let theirs = args(&[
            "--default-network-opt",
            "bridge=com.docker.network.driver.mtu=1300",
        ]);
        let p = d.plan(&network_mtu(1400, true), &theirs).unwrap();
        assert!(p.flags.is_empty());
        assert_eq!(p.notes.len(), 1);
    }

    #[test]
    fn network_mtu_merges_into_the_files_default_network_opts() {
        let d = Dir::new();
        d.write_config(
            r#"{"Default-Network-Opts": {"bridge": {"com.docker.network.bridge.enable_icc": "true"}, "overlay": {"x": "y"}}}"#,
        );
        let p = d.plan(&network_mtu(1400, false), &[]).unwrap();
        assert!(p.flags.is_empty());
        // Go reads the key case-insensitively: the user's spelling is the one merged into.
        assert_eq!(
            p.config_file.unwrap().value,
            json!({"Default-Network-Opts": {
                "bridge": {"com.docker.network.bridge.enable_icc": "true", "com.docker.network.driver.mtu": "1400"},
                "overlay": {"x": "y"}
            }})
        );

        d.write_config(r#"{"default-network-opts": {"overlay": {"x": "y"}}}"#);
        let p = d.plan(&network_mtu(1400, false), &[]).unwrap();
        assert_eq!(
            p.config_file.unwrap().value,
            json!({"default-network-opts": {"overlay": {"x": "y"}, "bridge": {"com.docker.network.driver.mtu": "1400"}}})
        );
    }

    #[test]
    fn cgroup_parent_is_a_flag_and_loses_to_the_users_own() {
        let d = Dir::new();
        let wanted = Wanted {
            cgroup_parent: Some(Scalar::new("/kubepods/pod1/c1/docker".into(), false)),
            ..Wanted::default()
        };
        let p = d.plan(&wanted, &[]).unwrap();
        assert_eq!(
            p.flags,
            args(&["--cgroup-parent", "/kubepods/pod1/c1/docker"])
        );
        let p = d.plan(&wanted, &args(&["--cgroup-parent=/mine"])).unwrap();
        assert!(p.flags.is_empty());
        d.write_config(r#"{"cgroup-parent": "/theirs"}"#);
        let p = d.plan(&wanted, &[]).unwrap();
        assert!(p.flags.is_empty() && p.config_file.is_none());
    }

    #[test]
    fn network_mtu_in_the_file_follows_scalar_precedence() {
        let d = Dir::new();
        d.write_config(
            r#"{"default-network-opts": {"bridge": {"com.docker.network.driver.mtu": "1300"}}}"#,
        );
        // Detected: the file's wins.
        let p = d.plan(&network_mtu(1400, false), &[]).unwrap();
        assert_eq!(p.config_file, None);
        assert_eq!(p.notes.len(), 1);
        // Set explicitly: ours wins, with a warning.
        let p = d.plan(&network_mtu(1400, true), &[]).unwrap();
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(
            p.config_file.unwrap().value["default-network-opts"]["bridge"]
                ["com.docker.network.driver.mtu"],
            json!("1400")
        );

        d.write_config(r#"{"default-network-opts": {"bridge": ["x"]}}"#);
        let err = d.plan(&network_mtu(1400, false), &[]).unwrap_err();
        assert!(
            matches!(
                err,
                DaemonJsonError::BadKey {
                    key: "default-network-opts",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn mirrors_merge_into_a_generated_copy_when_the_file_sets_them() {
        let d = Dir::new();
        d.write_config(
            r#"{"debug": true, "registry-mirrors": ["https://theirs", "https://m1"], "mtu": 1400}"#,
        );
        let p = d
            .plan(&mirrors(&["https://m1", "https://ours"]), &[])
            .unwrap();
        assert!(p.flags.is_empty(), "{:?}", p.flags);
        let g = p.config_file.as_ref().unwrap();
        assert_eq!(g.path, d.generated());
        assert_eq!(
            g.value,
            json!({"debug": true, "registry-mirrors": ["https://theirs", "https://m1", "https://ours"], "mtu": 1400})
        );
        assert_eq!(p.notes.len(), 1);

        apply(&p).unwrap();
        let written: Value =
            serde_json::from_str(&fs::read_to_string(d.generated()).unwrap()).unwrap();
        assert_eq!(&written, &g.value);
        // The original key order survives (preserve_order), so diffs against it stay readable.
        let keys: Vec<_> = written.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["debug", "registry-mirrors", "mtu"]);
        let mode = fs::metadata(d.generated()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let new_args = p.dockerd_args(&args(&["--debug"]));
        assert_eq!(
            new_args,
            args(&[
                "--debug",
                "--config-file",
                &d.generated().display().to_string()
            ])
        );
    }

    #[test]
    fn nothing_is_generated_when_the_file_already_has_all_our_items() {
        let d = Dir::new();
        d.write_config(r#"{"registry-mirrors": ["https://m1"]}"#);
        let p = d.plan(&mirrors(&["https://m1"]), &[]).unwrap();
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn config_file_from_user_args_is_read_and_replaced() {
        let d = Dir::new();
        let custom = d.dir.path().join("custom.json");
        fs::write(&custom, r#"{"insecure-registries": ["a:5000"]}"#).unwrap();
        // The default file would say otherwise; it must not be read.
        d.write_config("not json");
        let wanted = Wanted {
            insecure_registries: args(&["b:5000"]),
            ..Wanted::default()
        };
        let gen = d.generated().display().to_string();
        for user in [
            args(&["--config-file", custom.to_str().unwrap(), "--debug"]),
            args(&[&format!("--config-file={}", custom.display()), "--debug"]),
        ] {
            let p = d.plan(&wanted, &user).unwrap();
            assert!(p.replace_config_flag);
            assert_eq!(
                p.config_file.as_ref().unwrap().value,
                json!({"insecure-registries": ["a:5000", "b:5000"]})
            );
            assert_eq!(
                p.dockerd_args(&user),
                args(&["--debug", "--config-file", &gen])
            );
        }
    }

    #[test]
    fn corrupt_json_is_a_one_line_error_naming_the_file() {
        let d = Dir::new();
        d.write_config("{\"registry-mirrors\": [\n");
        let err = d.plan(&mirrors(&["https://m"]), &[]).unwrap_err();
        assert!(matches!(err, DaemonJsonError::Parse { .. }));
        let msg = err.to_string();
        assert!(msg.contains(&d.config().display().to_string()), "{msg}");
        assert!(!msg.contains('\n'));
        assert!(std::error::Error::source(&err).is_some());

        d.write_config("[1, 2]");
        let err = d.plan(&Wanted::default(), &[]).unwrap_err();
        assert!(matches!(err, DaemonJsonError::NotObject { .. }), "{err}");

        d.write_config(r#"{"registry-mirrors": "https://m"}"#);
        let err = d.plan(&mirrors(&["https://x"]), &[]).unwrap_err();
        assert!(err.to_string().contains("a list of strings"), "{err}");
    }

    #[test]
    fn missing_config_file_from_flag_is_an_error() {
        let d = Dir::new();
        let user = args(&["--config-file", "/nonexistent/daemon.json"]);
        let err = d.plan(&Wanted::default(), &user).unwrap_err();
        assert!(matches!(err, DaemonJsonError::Missing { .. }), "{err}");
    }

    #[test]
    fn user_mirror_flag_and_ours_are_both_present() {
        let d = Dir::new();
        let user = args(&[
            "--registry-mirror",
            "https://theirs",
            "--registry-mirror=https://same",
        ]);
        let p = d
            .plan(&mirrors(&["https://ours", "https://same"]), &user)
            .unwrap();
        assert_eq!(p.flags, args(&["--registry-mirror", "https://ours"]));
        let all = flag_values(&p.dockerd_args(&user), "--registry-mirror", None);
        assert_eq!(
            all,
            args(&["https://theirs", "https://same", "https://ours"])
        );
    }

    #[test]
    fn user_scalar_flag_wins_and_is_not_repeated() {
        let d = Dir::new();
        let wanted = Wanted {
            storage_driver: Some(Scalar::new("vfs".into(), true)),
            mtu: Some(Scalar::new(1450, false)),
            ..Wanted::default()
        };
        let user = args(&["-s", "overlay2", "--mtu=1400"]);
        let p = d.plan(&wanted, &user).unwrap();
        assert!(p.flags.is_empty(), "{:?}", p.flags);
        assert_eq!(p.config_file, None);
        assert_eq!(p.warnings.len(), 1, "explicit storage driver lost: warn");
        assert_eq!(p.notes.len(), 1, "detected MTU lost: note");
    }

    #[test]
    fn explicit_scalar_overrides_the_file_with_a_warning() {
        let d = Dir::new();
        d.write_config(r#"{"storage-driver": "overlay2", "mtu": 1500}"#);
        let wanted = Wanted {
            storage_driver: Some(Scalar::new("vfs".into(), true)),
            mtu: Some(Scalar::new(1400, true)),
            ..Wanted::default()
        };
        let p = d.plan(&wanted, &[]).unwrap();
        assert!(p.flags.is_empty());
        assert_eq!(
            p.config_file.unwrap().value,
            json!({"storage-driver": "vfs", "mtu": 1400})
        );
        assert_eq!(p.warnings.len(), 2);
    }

    #[test]
    fn file_scalar_wins_over_a_detected_value() {
        let d = Dir::new();
        d.write_config(r#"{"mtu": 1400}"#);
        let wanted = Wanted {
            mtu: Some(Scalar::new(1450, false)),
            ..Wanted::default()
        };
        let p = d.plan(&wanted, &[]).unwrap();
        assert!(p.flags.is_empty());
        assert_eq!(p.config_file, None);
        assert_eq!(p.notes.len(), 1);
        assert!(p.warnings.is_empty());

        d.write_config(r#"{"mtu": "big"}"#);
        let err = d.plan(&wanted, &[]).unwrap_err();
        assert!(err.to_string().contains("\"mtu\""), "{err}");
    }

    fn deny(e: &[Entitlement]) -> Wanted {
        Wanted {
            deny_entitlements: e.to_vec(),
            ..Wanted::default()
        }
    }

    const BOTH: [Entitlement; 2] = [Entitlement::NetworkHost, Entitlement::SecurityInsecure];

    #[test]
    fn denied_entitlements_always_go_into_a_generated_copy() {
        let d = Dir::new();
        let wanted = Wanted {
            registry_mirrors: args(&["https://m"]),
            ..deny(&BOTH)
        };
        let p = d.plan(&wanted, &[]).unwrap();
        // Without a file, everything else stays a flag.
        assert_eq!(p.flags, args(&["--registry-mirror", "https://m"]));
        let denied = json!({"builder": {"entitlements": {"network-host": false, "security-insecure": false}}});
        assert_eq!(p.config_file.as_ref().unwrap().value, denied);
        let gen = d.generated().display().to_string();
        assert_eq!(
            p.dockerd_args(&[]),
            args(&["--registry-mirror", "https://m", "--config-file", &gen])
        );
        assert_eq!(p.notes.len(), 1);
        assert!(p.warnings.is_empty());
        // A file that already denies both is still copied: dockerd reads only a file of ours,
        // never one that could change after we read it.
        d.write_config(&denied.to_string());
        let p = d.plan(&deny(&BOTH), &[]).unwrap();
        assert_eq!(p.config_file.unwrap().value, denied);
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn a_grant_in_the_file_is_overridden_and_the_rest_of_builder_kept() {
        let d = Dir::new();
        d.write_config(
            r#"{"debug": true, "builder": {"gc": {"enabled": true}, "entitlements": {"network-host": true, "security-insecure": true}}}"#,
        );
        let p = d.plan(&deny(&BOTH), &[]).unwrap();
        assert_eq!(
            p.config_file.unwrap().value,
            json!({"debug": true, "builder": {"gc": {"enabled": true}, "entitlements": {"network-host": false, "security-insecure": false}}})
        );
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        // Only what the policy denies is touched.
        let p = d.plan(&deny(&[Entitlement::NetworkHost]), &[]).unwrap();
        assert_eq!(
            p.config_file.unwrap().value["builder"]["entitlements"],
            json!({"network-host": false, "security-insecure": true})
        );
    }

    #[test]
    fn nothing_denied_leaves_the_files_entitlements_as_they_are() {
        let d = Dir::new();
        for text in [
            r#"{"builder": {"entitlements": {"network-host": false}}}"#,
            r#"{"builder": {"entitlements": {"network-host": true, "security-insecure": true}}}"#,
        ] {
            d.write_config(text);
            assert_eq!(d.plan(&deny(&[]), &[]).unwrap(), Plan::default());
        }
    }

    #[test]
    fn keys_are_found_as_go_finds_them_and_two_spellings_are_refused() {
        let d = Dir::new();
        // Go's decoder matches field names case-insensitively, and ſ to s: edit that key.
        d.write_config(r#"{"Builder": {"Entitlements": {"Network-Hoſt": true}}}"#);
        let p = d.plan(&deny(&BOTH), &[]).unwrap();
        assert_eq!(
            p.config_file.unwrap().value,
            json!({"Builder": {"Entitlements": {"Network-Hoſt": false, "security-insecure": false}}})
        );
        // Go would merge two spellings in document order; we do not guess.
        for (text, key) in [
            (
                r#"{"builder": {}, "BUILDER": {"entitlements": {"network-host": true}}}"#,
                "builder",
            ),
            (
                r#"{"builder": {"entitlements": {}, "Entitlements": {}}}"#,
                "builder.entitlements",
            ),
            (
                r#"{"builder": {"entitlements": {"network-host": false, "NETWORK-HOST": true}}}"#,
                "builder.entitlements.network-host",
            ),
        ] {
            d.write_config(text);
            let err = d.plan(&deny(&BOTH), &[]).unwrap_err();
            assert!(
                matches!(err, DaemonJsonError::Ambiguous { key: k, .. } if k == key),
                "{text}: {err}"
            );
            // Allowed by the policy: not ours to judge.
            assert!(d.plan(&deny(&[]), &[]).is_ok());
        }
        // null is Go's zero value; anything else that is not an object stops start-up.
        d.write_config(r#"{"builder": null}"#);
        assert!(d.plan(&deny(&BOTH), &[]).is_ok());
        d.write_config(r#"{"builder": {"entitlements": ["network.host"]}}"#);
        let err = d.plan(&deny(&BOTH), &[]).unwrap_err();
        assert!(
            err.to_string().contains("\"builder.entitlements\""),
            "{err}"
        );
    }

    #[test]
    fn explicit_storage_driver_reads_flags_then_the_file() {
        let d = Dir::new();
        assert_eq!(
            explicit_storage_driver(&[], &load(&[], &d.config()).unwrap()).unwrap(),
            None
        );
        d.write_config(r#"{"storage-driver": "btrfs"}"#);
        assert_eq!(
            explicit_storage_driver(&[], &load(&[], &d.config()).unwrap())
                .unwrap()
                .as_deref(),
            Some("btrfs")
        );
        assert_eq!(
            explicit_storage_driver(
                &args(&["-s", "vfs"]),
                &load(&args(&["-s", "vfs"]), &d.config()).unwrap()
            )
            .unwrap()
            .as_deref(),
            Some("vfs")
        );
        let cfg = load(&[], &d.config()).unwrap();
        assert_eq!(
            configured(&[], &cfg, "storage-driver"),
            Some(json!("btrfs"))
        );
        assert_eq!(configured(&[], &cfg, "debug"), None);
    }
}
