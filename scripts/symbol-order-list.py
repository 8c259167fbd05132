#!/usr/bin/env python3
"""Part of scripts/symbol-order.sh: one plugin's function order from the callgrind profiles,
grouped by the verbs that run each function, so that each verb's code is gathered:

  start-up, what VERSION runs (every invocation runs it), what both ADD and DEL run,
  "@native" (where symbol-order-faults.py adds what the real runs fault in), what only DEL
  runs, what only ADD runs, then the rest (the cold phases: other backends, a fresh node,
  CHECK, GC, STATUS).

The kernel maps code in 64 KiB windows around each page a process first runs, so a DEL whose
functions sit between ADD's pays for ADD's windows too. Within a group, functions keep the
order in which the profiles first ran them.

usage: symbol-order-list.py WORK_DIR PLUGIN_BINARY STARTUP_NAMES...
Profiles are WORK_DIR/<phase>/cg.<VERB>.<pid>; hot phases are cg.1 to cg.3, cold cg.4.
Prints the list on stdout."""
import glob
import os
import re
import sys

work, bin_path = sys.argv[1], sys.argv[2]
startup = sys.argv[3:]
FN = re.compile(r"^c?fn=\(\d+\) (.*)$")


def functions(path):
    """The functions a profile names, in order of first mention, if it is the plugin's."""
    with open(path, errors="replace") as f:
        text = f.read()
    cmd = re.search(r"^cmd: *(\S+)", text, re.M)
    if not cmd or cmd.group(1) != bin_path:
        return []
    out = []
    for line in text.splitlines():
        m = FN.match(line)
        if m:
            name = re.sub(r"'\d+$", "", m.group(1))
            if name == "(below main)":
                name = "__libc_start_main"
            if not name.startswith("0x"):
                out.append(name)
    return out


def profiles(phase):
    """(verb, path) of a phase's profiles, in the order the phase ran them (by pid)."""
    found = []
    for path in glob.glob(f"{work}/{phase}/cg.*"):
        parts = os.path.basename(path).split(".")
        if len(parts) == 3 and parts[2].isdigit():
            found.append((int(parts[2]), parts[1], path))
    return [(verb, path) for _, verb, path in sorted(found)]


first = {}  # name -> rank of first appearance in the hot phases
verbs = {}  # name -> verbs of the hot phases that ran it
for phase in ("cg.1", "cg.2", "cg.3"):
    for verb, path in profiles(phase):
        for name in functions(path):
            first.setdefault(name, len(first))
            verbs.setdefault(name, set()).add(verb)


def group(name):
    v = verbs[name]
    if "VERSION" in v:
        return 0
    if {"ADD", "DEL"} <= v:
        return 1
    if "DEL" in v:
        return 3
    if "ADD" in v:
        return 4
    return 5


order = list(dict.fromkeys(startup))
hot = sorted(first, key=lambda n: (group(n), first[n]))
order += [n for n in hot if group(n) < 3]
order.append("@native")
order += [n for n in hot if group(n) >= 3]
for _, path in profiles("cg.4"):
    order += functions(path)
print("\n".join(dict.fromkeys(order)))
