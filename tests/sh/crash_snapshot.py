#!/usr/bin/env python3
"""Snapshot workload and checker for tests/sh/crash_snapshot.sh.

  crash_snapshot.py run MOUNTPOINT STATE CYCLE COWFS_BIN    runs until killed
  crash_snapshot.py check MOUNTPOINT STATE                  after a kill -9 and a remount

`run` writes durable files (d-*, fsync'd, never changed again), overwrites churn files (so a
snapshot holds pages of its own and its delete has real work to do in the background), and
creates, deletes and rolls back snapshots with the cowfs CLI. Every step is appended to STATE
(fsync'd) before it starts ("S+ name", "D+ name", "R+ name") and once the command has returned
("S name", "D name", "R name"), and every durable file once it is fsync'd ("F name size
sha256").

`check` replays STATE and compares it with the mount:
  - every d-* file anywhere (live tree or any snapshot) that STATE knows has its exact bytes;
  - a snapshot whose create returned exists and holds every durable file the live tree held
    then; one whose create was cut short may exist or not, and if it does it is whole;
  - a snapshot whose delete returned is gone; one whose delete was cut short is gone or whole;
  - the live tree holds every durable file it must: after a rollback that returned, exactly the
    snapshot's; after one that was cut short, either the old set or the snapshot's, whole;
  - no snapshot name is listed twice.
It then appends "L ..." (the durable files the live tree holds now) and "K ..." (the snapshots
that exist now) so the next cycle starts from certain ground, and exits 1 if anything is wrong.
"""
import hashlib
import json
import os
import random
import subprocess
import sys


# Snapshots kept at most: every check reads every file of every snapshot back.
MAX_SNAPSHOTS = 8


def append(state, line):
    state.write(line + "\n")
    state.flush()
    os.fsync(state.fileno())


class Model:
    """What STATE says the filesystem must look like."""

    def __init__(self):
        self.files = {}        # durable name -> (size, sha256)
        self.live = set()      # durable names the live tree must hold
        self.live_alt = None   # after a cut-short rollback: the other allowed live set
        self.snaps = {}        # snapshot name -> set of durable names it must hold
        self.maybe = {}        # snapshot name -> its set: may or may not exist (cut short)
        self.pending = None    # the last "X+" line not yet followed by "X"

    def apply(self, line):
        op, *rest = line.split(" ")
        if op == "F":
            name, size, sha = rest
            self.files[name] = (int(size), sha)
            self.live.add(name)
            if self.live_alt is not None:
                self.live_alt.add(name)
            return
        if op == "L":
            self.live = set(rest)
            self.live_alt = None
            return
        if op == "K":
            keep = set(rest)
            for name in list(self.maybe):
                if name in keep:
                    self.snaps[name] = self.maybe[name]
            self.maybe = {}
            # a certain snapshot that is gone was reported by that check; go on from what is
            self.snaps = {k: v for k, v in self.snaps.items() if k in keep}
            self.pending = None
            return
        name = rest[0]
        if op.endswith("+"):
            self.pending = (op[0], name)
            if op == "S+":
                self.maybe[name] = set(self.live)
            elif op == "D+":
                if name in self.snaps:
                    self.maybe[name] = self.snaps.pop(name)
            elif op == "R+":
                if name in self.snaps:
                    self.live_alt = set(self.snaps[name])
            return
        self.pending = None
        if op == "S":
            self.snaps[name] = self.maybe.pop(name)
        elif op == "D":
            self.maybe.pop(name, None)
        elif op == "R":
            if self.live_alt is not None:
                self.live = self.live_alt
                self.live_alt = None


def load(path):
    m = Model()
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    m.apply(line)
    return m


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def durable_in(d):
    try:
        return {e for e in os.listdir(d) if e.startswith("d-")}
    except OSError:
        return set()


def check(mnt, state_path):
    m = load(state_path)
    problems = []
    known = m.files

    def whole(where, names):
        for n in sorted(names):
            p = os.path.join(where, n)
            if not os.path.exists(p):
                problems.append(f"{p}: missing")
            elif sha(p) != known[n][1]:
                problems.append(f"{p}: content differs from the fsync'd bytes")

    def every_known_file_right(where):
        for n in durable_in(where):
            if n in known and sha(os.path.join(where, n)) != known[n][1]:
                problems.append(f"{where}/{n}: content differs from the fsync'd bytes")

    snapdir = os.path.join(mnt, ".snapshots")
    listed = [e["name"] for e in json.loads(
        subprocess.run([COWFS, "snapshot", "list", "--json", mnt], check=True,
                       capture_output=True, text=True).stdout)]
    if len(listed) != len(set(listed)):
        problems.append(f"a snapshot name is listed twice: {listed}")
    present = set(listed)
    for name, names in m.snaps.items():
        if name not in present:
            problems.append(f"snapshot {name}: its create returned, but it is gone")
        else:
            whole(os.path.join(snapdir, name), names)
    for name, names in m.maybe.items():
        if name in present:
            whole(os.path.join(snapdir, name), names)
    for name in present - set(m.snaps) - set(m.maybe):
        problems.append(f"snapshot {name}: exists, but it was deleted or never made")
    for name in present:
        every_known_file_right(os.path.join(snapdir, name))

    live_now = durable_in(mnt)
    if m.live_alt is not None:
        if not (m.live <= live_now or m.live_alt <= live_now):
            problems.append(f"live tree after a cut-short rollback is neither the old tree nor "
                            f"the snapshot: missing {sorted(m.live - live_now)[:5]} / "
                            f"{sorted(m.live_alt - live_now)[:5]}")
    else:
        whole(mnt, m.live)
    every_known_file_right(mnt)

    with open(state_path, "a") as state:
        append(state, "L " + " ".join(sorted(n for n in live_now if n in known)))
        append(state, "K " + " ".join(sorted(present)))
    for p in problems:
        print(p)
    print(f"checked: {len(present)} snapshots, {len(live_now)} durable files live, "
          f"{len(problems)} problems")
    return 1 if problems else 0


def cli(*args):
    return subprocess.run([COWFS, "snapshot", *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def step(state, m, tag, name, *args):
    """One snapshot command: "TAG+ name" logged before it, "TAG name" once it returned."""
    append(state, f"{tag}+ {name}")
    m.apply(f"{tag}+ {name}")
    if cli(*args):
        append(state, f"{tag} {name}")
        m.apply(f"{tag} {name}")


def run(mnt, state_path, cycle):
    rnd = random.Random(int(cycle))
    m = load(state_path)
    n = 0
    with open(state_path, "a") as state:
        while True:
            n += 1
            op = rnd.choice(["durable", "durable", "durable", "churn", "churn", "create",
                             "create", "delete", "delete", "rollback"])
            try:
                if op == "durable":
                    name = f"d-{cycle}-{n}"
                    data = rnd.randbytes(rnd.choice([0, 100, 4096, 70000, 300000]))
                    with open(os.path.join(mnt, name), "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    append(state, f"F {name} {len(data)} {hashlib.sha256(data).hexdigest()}")
                    m.apply(f"F {name} {len(data)} x")
                elif op == "churn":
                    path = os.path.join(mnt, f"churn-{rnd.randint(0, 3)}")
                    with open(path, "ab+") as f:
                        f.seek(rnd.randint(0, 4 << 20))
                        f.write(rnd.randbytes(rnd.randint(1, 2 << 20)))
                elif op == "create" and len(m.snaps) + len(m.maybe) < MAX_SNAPSHOTS:
                    name = f"s-{cycle}-{n}"
                    extra = ["--writable"] if rnd.random() < 0.3 else []
                    step(state, m, "S", name, "create", mnt, name, *extra)
                elif (op == "delete" and len(m.snaps) > 3) or (op == "create" and m.snaps):
                    name = rnd.choice(sorted(m.snaps))
                    step(state, m, "D", name, "delete", mnt, name)
                elif op == "rollback" and m.snaps:
                    name = rnd.choice(sorted(m.snaps))
                    step(state, m, "R", name, "rollback", mnt, name)
            except OSError:
                pass


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "run":
        COWFS = sys.argv[5]
        run(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 5 and sys.argv[1] == "check":
        COWFS = sys.argv[4]
        sys.exit(check(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
