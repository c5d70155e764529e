//! The copy-paste kit in `examples/`, read for the tests that check it
//! (`examples.rs`) and re-enact it (`e2e.rs`): files are parsed by
//! `scripts/examples.py` in the Python environment `scripts/test.sh` makes
//! (`DIND_TEST_PYTHON`, see `scripts/python-sdk.sh`), so YAML is read by
//! a YAML 1.1 reader as kubectl, GitLab and GitHub read it.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The image name the kit uses for our service image; tests put the image
/// under test in its place.
pub const OUR_IMAGE_NAME: &str = "registry.example/dind-supervisor";

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root")
}

pub fn examples_dir() -> PathBuf {
    repo().join("examples")
}

/// A file of the kit by its path under `examples/`.
pub fn example(rel: &str) -> PathBuf {
    let p = examples_dir().join(rel);
    assert!(p.is_file(), "{} is missing from the kit", p.display());
    p
}

/// `scripts/examples.py` with `args`, in the tests' Python environment.
pub fn examples_py(args: &[&Path]) -> Output {
    let python = std::env::var_os("DIND_TEST_PYTHON").unwrap_or_else(|| {
        panic!(
            "DIND_TEST_PYTHON is not set: run the tests through `bash scripts/test.sh`, or \
             export DIND_TEST_PYTHON=\"$(bash scripts/python-sdk.sh)\""
        )
    });
    Command::new(&python)
        .arg(repo().join("scripts/examples.py"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&python).display()))
}

/// The documents of one kit file, as JSON.
pub fn load(path: &Path) -> Vec<Value> {
    let out = examples_py(&[Path::new("load"), path]);
    assert!(
        out.status.success(),
        "{} does not parse: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("examples.py load prints JSON")
}

/// The one document of a single-document file.
pub fn load_one(path: &Path) -> Value {
    let mut docs = load(path);
    assert_eq!(docs.len(), 1, "{}: expected one document", path.display());
    docs.remove(0)
}

/// Whether `image` is our service image (any tag or digest).
pub fn is_our_image(image: &str) -> bool {
    image
        .split(['@', ':'])
        .next()
        .is_some_and(|name| name == OUR_IMAGE_NAME)
}

/// A string field, or "" when absent.
pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A YAML/TOML mapping of variables (`variables:`, `env:` in a workflow) as
/// name and value; numbers and booleans as the runner would pass them.
pub fn variables(v: Option<&Value>) -> Vec<(String, String)> {
    let Some(Value::Object(map)) = v else {
        return Vec::new();
    };
    map.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                other => other.to_string(),
            };
            (k.clone(), value)
        })
        .collect()
}

/// A Kubernetes container's `env` list as name and value (only literal
/// values: the kit uses no references).
pub fn container_env(container: &Value) -> Vec<(String, String)> {
    container
        .get("env")
        .and_then(Value::as_array)
        .map(|env| {
            env.iter()
                .map(|e| {
                    let value = e.get("value").and_then(Value::as_str).unwrap_or_else(|| {
                        panic!("env entry {e} has no literal value: the re-enactment knows no other kind")
                    });
                    (text(e, "name").to_owned(), value.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A list of strings (`command:`, `args:`).
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| {
                    s.as_str()
                        .unwrap_or_else(|| panic!("{s} is not a string"))
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A duration as the supervisor's settings spell the kit's: `20s`, `500ms`,
/// `2m`.
pub fn duration(s: &str) -> std::time::Duration {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .unwrap_or_else(|_| panic!("{s:?} is not a duration"));
    match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(60 * n),
        _ => panic!("{s:?}: unknown unit (the kit uses ms, s or m)"),
    }
}

/// Each job of a `.gitlab-ci.yml` with its service of our image.
pub fn gitlab_services(ci: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (job, def) in ci.as_object().into_iter().flatten() {
        for s in def["services"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let name = s.as_str().unwrap_or_else(|| text(s, "name"));
            if is_our_image(name) {
                out.push((job.clone(), s.clone()));
            }
        }
    }
    out
}

/// Splits a runner's `options:` string into arguments as a POSIX shell
/// would: blanks separate, quotes group, a backslash escapes.
pub fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (Some(q), c) if c == q => quote = None,
            (None | Some('"'), '\\') => {
                if let Some(next) = chars.next() {
                    word.get_or_insert_with(String::new).push(next);
                }
            }
            (_, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(quote.is_none(), "unbalanced quote in {s:?}");
    words.extend(word);
    words
}

#[test]
fn shell_words_split_as_a_shell_does() {
    assert_eq!(
        shell_words("--privileged\n--health-cmd \"dind-supervisor health\" --x='a b'c \"\""),
        [
            "--privileged",
            "--health-cmd",
            "dind-supervisor health",
            "--x=a bc",
            ""
        ]
    );
}
