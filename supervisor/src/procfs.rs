//! Reading the process tree from /proc.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use nix::unistd::Pid;

/// Parent pid from the text of `/proc/<pid>/stat`. The command name sits in
/// parentheses and may itself contain spaces and `)`, so split at the last `)`.
fn parent_of(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// Every live process below `root`, children before grandchildren.
pub fn descendants(root: Pid) -> Vec<Pid> {
    descendants_in(Path::new("/proc"), root)
}

fn descendants_in(proc_root: &Path, root: Pid) -> Vec<Pid> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Processes vanish while we look; a missing stat file is normal.
        if let Some(ppid) = fs::read_to_string(entry.path().join("stat"))
            .ok()
            .as_deref()
            .and_then(parent_of)
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root.as_raw()];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            out.push(Pid::from_raw(c));
            queue.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_survives_odd_command_names() {
        assert_eq!(parent_of("42 (dockerd) S 1 42 42 0"), Some(1));
        assert_eq!(parent_of("43 (a) b) (c) R 7 43 43 0"), Some(7));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn walks_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        for (pid, ppid) in [(1, 0), (10, 1), (11, 10), (12, 11), (20, 1), (30, 99)] {
            let p = dir.path().join(pid.to_string());
            fs::create_dir(&p).unwrap();
            fs::write(p.join("stat"), format!("{pid} (x y) S {ppid} 0 0")).unwrap();
        }
        fs::create_dir(dir.path().join("self")).unwrap();
        let mut got: Vec<i32> = descendants_in(dir.path(), Pid::from_raw(10))
            .into_iter()
            .map(Pid::as_raw)
            .collect();
        got.sort();
        assert_eq!(got, vec![11, 12]);
        assert_eq!(descendants_in(dir.path(), Pid::from_raw(1)).len(), 4);
    }
}
