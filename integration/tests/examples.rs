//! The copy-paste kit (`examples/`, issue 12) checked as its consumers would
//! read it, over the whole directory, so a file added later is covered too:
//! every file parses; every Kubernetes object, and every pod template
//! embedded in Helm values, matches the Kubernetes API schema; every
//! variable and subcommand of ours that a file names exists in the binary;
//! every Kubernetes example fits the supervisor's stop into the pod's grace
//! period. (`e2e.rs` runs the kit's shapes on a runner host.)

mod kit;
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use kit::{examples_dir, examples_py, is_our_image, load_one, text};

/// What the supervisor may take past `DIND_SHUTDOWN_TIMEOUT` in the worst
/// case (`supervisor/src/supervise.rs`): KILL_GRACE (2 s) for a SIGKILLed
/// dockerd to die, PROXY_DRAIN (1.5 s) and LEFTOVER_GRACE (0.5 s).
const STOP_OVERRUN: Duration = Duration::from_secs(4);

/// Every file under `dir`, as paths relative to its parent (`examples/…`).
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(dir, &mut paths);
    let base = dir.parent().expect("examples/ has a parent");
    paths
        .iter()
        .map(|p| p.strip_prefix(base).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// `examples.py check` over `dir`: its report, and its problems (one a line).
fn check(dir: &Path) -> (Value, Vec<String>) {
    let out = examples_py(&[Path::new("check"), dir]);
    let problems: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        out.status.success(),
        problems.is_empty(),
        "examples.py exit status and its problems disagree: {problems:?}"
    );
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("examples.py check printed no report ({e}): {problems:?}"));
    (report, problems)
}

fn entries<'a>(report: &'a Value, key: &str) -> &'a [Value] {
    report[key]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

#[test]
fn every_example_parses_and_its_kubernetes_objects_match_the_api_schema() {
    let dir = examples_dir();
    let (report, problems) = check(&dir);
    assert!(
        problems.is_empty(),
        "the kit has problems:\n{}",
        problems.join("\n")
    );
    let listed: BTreeSet<String> = entries(&report, "files")
        .iter()
        .map(|f| text(f, "path").to_owned())
        .collect();
    assert_eq!(
        listed,
        files_under(&dir),
        "examples.py did not read every file of the kit"
    );
    let kinds: Vec<String> = entries(&report, "kubernetes")
        .iter()
        .map(|o| format!("{} {}", text(o, "path"), text(o, "kind")))
        .collect();
    eprintln!("checked against the API schema: {kinds:?}");
    for (key, what) in [
        ("kubernetes", "Kubernetes object"),
        ("pod_specs", "pod spec"),
        ("embedded_toml", "runner config.toml inside Helm values"),
    ] {
        assert!(
            !entries(&report, key).is_empty(),
            "no {what} was found in the kit to check"
        );
    }
}

/// The check can fail: each of these breaks one rule the API server (or a
/// YAML reader) enforces, in an otherwise valid copy of the kit's pod.
#[test]
fn the_schema_check_refuses_what_the_api_server_refuses() {
    let pod = fs::read_to_string(kit::example("kubernetes-pod/pod.yaml")).unwrap();
    let cases = [
        (
            "misspelled-field.yaml",
            pod.replace("readinessProbe:", "readinesProbe:"),
        ),
        (
            "wrong-type.yaml",
            pod.replace(
                "terminationGracePeriodSeconds: 30",
                "terminationGracePeriodSeconds: \"30\"",
            ),
        ),
        (
            "missing-required.yaml",
            pod.replace("    - name: build\n", "    - \n"),
        ),
        (
            "wrong-group.yaml",
            pod.replace("apiVersion: v1", "apiVersion: apps/v1"),
        ),
        (
            "duplicate-key.yaml",
            pod.replace(
                "  restartPolicy: Never\n",
                "  restartPolicy: Never\n  restartPolicy: Always\n",
            ),
        ),
        ("not-yaml.json", "{}".to_owned()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("examples");
    fs::create_dir(&root).unwrap();
    for (name, content) in &cases {
        assert_ne!(content, &pod, "{name}: the mutation did not apply");
        fs::write(root.join(name), content).unwrap();
    }
    let (_, problems) = check(&root);
    for (name, _) in &cases {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("examples/{name}:"))),
            "{name} was not refused; problems:\n{}",
            problems.join("\n")
        );
    }
    assert_eq!(
        problems.len(),
        cases.len(),
        "one problem per broken file:\n{}",
        problems.join("\n")
    );
}

/// The `--help` of the binary and each of its subcommands.
fn help_texts(bin: &Path) -> (Vec<String>, String) {
    let help = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().unwrap();
        assert!(out.status.success(), "{} {args:?} failed", bin.display());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    let subcommands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(!subcommands.is_empty(), "no subcommands in --help:\n{top}");
    let mut all = top.clone();
    for sub in &subcommands {
        all.push_str(&help(&[sub, "--help"]));
    }
    (subcommands, all)
}

/// Every `DIND_*` and `DOCKER_*` name in `text`.
fn variable_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_';
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if word(bytes[i]) && (i == 0 || !word(bytes[i - 1])) {
            let end = (i..bytes.len())
                .find(|&j| !word(bytes[j]))
                .unwrap_or(bytes.len());
            let name = &text[i..end];
            if (name.starts_with("DIND_") || name.starts_with("DOCKER_")) && name.len() > 7 {
                out.insert(name.trim_end_matches('_').to_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// The string constants of `supervisor/src/env.rs`: every variable name the
/// binary reads.
fn env_rs_names() -> BTreeSet<String> {
    let src = fs::read_to_string(kit::repo().join("supervisor/src/env.rs")).unwrap();
    src.lines()
        .filter(|l| l.trim_start().starts_with("pub const") && l.contains("&str"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
        .collect()
}

/// Every `dind-supervisor WORD --flag…` in `text`, in the forms the kit
/// writes a command: a line of shell, a quoted string (`--health-cmd
/// "dind-supervisor health"`), a YAML/JSON list (`["dind-supervisor",
/// "health"]`). Returns each word with the flags that follow it.
fn invocations(text: &str) -> Vec<(String, Vec<String>)> {
    const NAME: &str = "dind-supervisor";
    let mut out = Vec::new();
    for (at, _) in text.match_indices(NAME) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || "/-_.:".contains(c)) {
            continue; // an image name or a path, not the command
        }
        let rest = &text[at + NAME.len()..];
        let line = rest.split('\n').next().unwrap_or_default();
        let words: Vec<String> = match before {
            Some(q @ ('"' | '\'')) if rest.starts_with(q) => line
                .split(']')
                .next()
                .unwrap_or_default()
                .split(',')
                .skip(1)
                .map(|w| w.trim().trim_matches(q).to_owned())
                .collect(),
            Some(q @ ('"' | '\'')) => line
                .split(q)
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            _ => line
                .split([';', '|', '&'])
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        };
        let Some(sub) = words.first() else { continue };
        if sub.is_empty() || !sub.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            continue;
        }
        let flags = words[1..]
            .iter()
            .take_while(|w| w.starts_with("--") && *w != "--")
            .map(|w| w.split('=').next().unwrap().to_owned())
            .collect();
        out.push((sub.clone(), flags));
    }
    out
}

/// The parts of a kit file where commands are written: a config file but
/// its comment lines (prose), each code span and block of a README.
fn command_texts(path: &Path, content: &str) -> Vec<String> {
    if path.extension().is_some_and(|e| e == "md") {
        content
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    } else {
        let code: Vec<&str> = content
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        vec![code.join("\n")]
    }
}

#[test]
fn every_variable_and_subcommand_an_example_names_exists_in_the_binary() {
    let bin = support::binary();
    let (subcommands, help) = help_texts(&bin);
    let mut known = variable_names(&help);
    let from_source = env_rs_names();
    known.extend(from_source.iter().cloned());
    let dir = examples_dir();
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for rel in files_under(&dir) {
        let path = dir.parent().unwrap().join(&rel);
        let content = fs::read_to_string(&path).unwrap();
        for name in variable_names(&content) {
            // `$(NAME)` in a container's args is Kubernetes expanding a
            // variable of the pod spec (ARC's `--group=$(DOCKER_GROUP_GID)`),
            // not one the binary reads.
            let expanded = content.contains(&format!("$({name})"));
            if !known.contains(&name) && !expanded {
                unknown.push(format!(
                    "{rel}: variable {name} is not one the binary reads"
                ));
            }
            used.insert(name);
        }
        for (sub, flags) in command_texts(&path, &content)
            .iter()
            .flat_map(|t| invocations(t))
        {
            if !subcommands.contains(&sub) {
                unknown.push(format!(
                    "{rel}: `dind-supervisor {sub}` is not a subcommand ({subcommands:?})"
                ));
                continue;
            }
            let out = Command::new(&bin).args([&sub, "--help"]).output().unwrap();
            let sub_help = String::from_utf8_lossy(&out.stdout);
            for flag in flags {
                if !sub_help.contains(&format!("{flag} "))
                    && !sub_help.contains(&format!("{flag}="))
                {
                    unknown.push(format!(
                        "{rel}: `dind-supervisor {sub} {flag}`: no such flag"
                    ));
                }
            }
            used.insert(format!("dind-supervisor {sub}"));
        }
    }
    eprintln!("the kit names: {used:?}");
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
    assert!(
        used.iter().any(|u| u.starts_with("dind-supervisor ")),
        "no subcommand found: the search is broken"
    );
    // The check can fail: a name the binary does not read is found.
    assert!(!known.contains("DIND_NO_SUCH_SETTING"));
    assert!(!known.contains("DOCKER_GROUP_GID"));
    assert_eq!(
        variable_names("x DIND_NO_SUCH_SETTING: 1"),
        BTreeSet::from(["DIND_NO_SUCH_SETTING".to_owned()])
    );
    let found = |t: &str| invocations(t);
    assert_eq!(
        found("--health-cmd \"dind-supervisor health --timeout 2s\" --health-interval 2s"),
        [("health".to_owned(), vec!["--timeout".to_owned()])]
    );
    assert_eq!(
        found("command: [\"dind-supervisor\", \"wait\", \"--host=tcp://docker:2376\"]"),
        [("wait".to_owned(), vec!["--host".to_owned()])]
    );
    assert_eq!(
        found("- dind-supervisor wait && docker info"),
        [("wait".to_owned(), vec![])]
    );
    assert!(found("image: registry.example/dind-supervisor:0.1.0").is_empty());
}

/// A pod spec's grace period and, for each container of our image, its
/// `DIND_SHUTDOWN_TIMEOUT`: the timeout plus what the supervisor may take
/// after it must fit, and both must be written out.
fn check_pod_stop(where_: &str, spec: &Value, problems: &mut Vec<String>) -> usize {
    let grace = spec["terminationGracePeriodSeconds"].as_u64();
    let mut ours = 0;
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().map(Vec::as_slice).unwrap_or_default() {
            if !is_our_image(text(c, "image")) {
                continue;
            }
            ours += 1;
            let timeout = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| text(e, "name") == "DIND_SHUTDOWN_TIMEOUT")
                .and_then(|e| e["value"].as_str())
                .map(kit::duration);
            check_fit(
                &format!("{where_} container {}", text(c, "name")),
                timeout,
                grace,
                problems,
            );
        }
    }
    ours
}

fn check_fit(
    what: &str,
    timeout: Option<Duration>,
    grace: Option<u64>,
    problems: &mut Vec<String>,
) {
    match (timeout, grace) {
        (Some(t), Some(g)) if t + STOP_OVERRUN <= Duration::from_secs(g) => {
            eprintln!("{what}: DIND_SHUTDOWN_TIMEOUT {t:?} + {STOP_OVERRUN:?} fits the {g} s grace period");
        }
        (Some(t), Some(g)) => problems.push(format!(
            "{what}: DIND_SHUTDOWN_TIMEOUT {t:?} + {STOP_OVERRUN:?} exceeds the {g} s grace period"
        )),
        _ => problems.push(format!(
            "{what}: write out both DIND_SHUTDOWN_TIMEOUT ({timeout:?}) and the grace period ({grace:?})"
        )),
    }
}

#[test]
fn every_kubernetes_example_fits_the_stop_into_the_grace_period() {
    let (report, problems) = check(&examples_dir());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let mut problems = Vec::new();
    let mut checked = 0;
    for p in entries(&report, "pod_specs") {
        let where_ = format!("{} ({})", text(p, "path"), text(p, "at"));
        checked += check_pod_stop(&where_, &p["spec"], &mut problems);
    }
    // The GitLab Kubernetes executor: the grace period is the runner's
    // (Helm values), the timeout the service's (.gitlab-ci.yml beside it).
    for t in entries(&report, "embedded_toml") {
        let values = examples_dir().parent().unwrap().join(text(t, "path"));
        for runner in t["value"]["runners"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(k8s) = runner.get("kubernetes") else {
                continue;
            };
            let grace = k8s["pod_termination_grace_period_seconds"].as_u64();
            let ci = load_one(&values.with_file_name(".gitlab-ci.yml"));
            for (job, service) in kit::gitlab_services(&ci) {
                let timeout = kit::variables(service.get("variables"))
                    .into_iter()
                    .find(|(k, _)| k == "DIND_SHUTDOWN_TIMEOUT")
                    .map(|(_, v)| kit::duration(&v));
                check_fit(
                    &format!("{} job {job}", text(t, "path")),
                    timeout,
                    grace,
                    &mut problems,
                );
                checked += 1;
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        checked >= 2,
        "only {checked} Kubernetes shapes with our image were found"
    );
}
