#!/usr/bin/env python3
"""Lists functions longer than a limit (default 80 lines) outside tests, by
brace matching on rustfmt-formatted code: a `fn` line at any indent, to the
line that closes it at the same indent. Exits 1 if any is found without a
`// long:` comment just above its signature saying why."""
import os
import re
import sys

LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 80
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
found = []
for crate in ("supervisor/src", "proxy/src"):
    for dirpath, _, files in os.walk(os.path.join(root, crate)):
        for f in files:
            if not f.endswith(".rs") or f == "tests.rs":
                continue
            path = os.path.join(dirpath, f)
            lines = open(path, encoding="utf-8").read().split("\n")
            end_of_code = next((i for i, l in enumerate(lines) if re.match(r"#\[cfg\(test\)\]", l) and i + 1 < len(lines) and lines[i + 1].startswith("mod tests")), len(lines))
            for i, l in enumerate(lines[:end_of_code]):
                m = re.match(r"^(\s*)(pub(\([^)]*\))? )?(async )?(const )?fn (\w+)", l)
                if not m or l.rstrip().endswith(";"):
                    continue
                indent = m.group(1)
                for j in range(i + 1, end_of_code):
                    if lines[j] == indent + "}":
                        n = j - i + 1
                        if n > LIMIT:
                            k = i - 1
                            while k >= 0 and lines[k].strip().startswith("//") and "// long:" not in lines[k]:
                                k -= 1
                            why = k >= 0 and "// long:" in lines[k]
                            rel = os.path.relpath(path, root)
                            found.append((n, f"{rel}:{i + 1} {m.group(6)} ({n} lines)", why))
                        break
for n, where, why in sorted(found, reverse=True):
    print(where + ("  [reason given]" if why else ""))
sys.exit(1 if any(not why for _, _, why in found) else 0)
