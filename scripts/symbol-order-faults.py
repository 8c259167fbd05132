#!/usr/bin/env python3
"""Part of scripts/symbol-order.sh: the functions a real run faulted in that the order lists
miss (a CPU-specific variant of a string function, code a spawned child runs before exec,
slow paths that depend on timing), added to ORDER_DIR/<plugin>.full before its "@native" line.

usage: symbol-order-faults.py BIN_DIR ORDER_DIR PLUGIN... -- PERF_DATA...
Prints how many functions it added."""
import bisect
import re
import subprocess
import sys

bin_dir, order_dir = sys.argv[1], sys.argv[2]
sep = sys.argv.index("--")
plugins, datas = sys.argv[3:sep], sys.argv[sep + 1:]
SECTION = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+(\S.*):\((\.[^)]*)\)$")
SYMBOL = re.compile(r"^\s*[0-9a-f]+\s+[0-9a-f]+\s+[0-9a-f]+\s+\d+\s+(\S+)$")


def read_map(path):
    """Input sections of the link map as (address, size, name of a symbol in it), sorted."""
    secs, start = [], None
    for line in open(path, errors="replace"):
        m = SECTION.match(line)
        if m:
            addr, size, sec = int(m.group(1), 16), int(m.group(2), 16), m.group(4)
            name = None
            for prefix in (".text.unlikely.", ".text.startup.", ".text.hot.", ".text."):
                if sec.startswith(prefix) and sec[len(prefix):].startswith(("_ZN", "_R")):
                    name = sec[len(prefix):]
                    break
            secs.append([addr, size, [name] if name else [], sec.startswith(".text")])
            continue
        m = SYMBOL.match(line)
        if m and secs:
            if not secs[-1][2] or not secs[-1][2][0].startswith(("_ZN", "_R")):
                # C code: one section for a whole file; every symbol names it (some are
                # local, which the linker may not match)
                secs[-1][2].append(m.group(1))
            if m.group(1) == "_start":
                start = int(line.split()[0], 16)
    secs.sort()
    return secs, start


maps = {p[:15]: (p, *read_map(f"{bin_dir}/{p}.map")) for p in plugins}
found = {p: [] for p in plugins}
for data in datas:
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,addr,ip"],
                         capture_output=True, text=True).stdout
    bias = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) != 4 or f[0] not in maps or f[2] != f[3]:
            continue  # not a plugin, or a data fault
        plugin, secs, start = maps[f[0]]
        ip = int(f[3], 16)
        if f[0] not in bias:
            bias[f[0]] = ip - start  # a process's first instruction is _start
        a = ip - bias[f[0]]
        i = bisect.bisect_right(secs, [a, float("inf")]) - 1
        if i >= 0 and a < secs[i][0] + secs[i][1] and secs[i][3] and secs[i][2]:
            found[plugin].extend(secs[i][2])

added = 0
for p in plugins:
    path = f"{order_dir}/{p}.full"
    lines = open(path).read().split("\n")
    have = set(lines)
    new = [n for n in dict.fromkeys(found[p]) if n not in have]
    at = lines.index("@native")
    lines[at:at] = new
    open(path, "w").write("\n".join(lines))
    added += len(new)
print(added)
