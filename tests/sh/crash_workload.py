#!/usr/bin/env python3
"""Mixed workload for tests/sh/crash_kill.sh: runs until killed.

Durable files (d-*) are written, fsync'd, then recorded in MANIFEST (path, size, sha256)
and never touched again. Everything else (clones of durable files that are then written
into, copies, renames, truncates, unlinks, directories) is churn around them.

usage: crash_workload.py MOUNTPOINT MANIFEST CYCLE SEED COWFS_BIN
"""
import hashlib
import os
import random
import subprocess
import sys


def main():
    mnt, manifest, cycle, seed, cowfs = sys.argv[1:6]
    rnd = random.Random(int(seed))
    durable = []
    n = 0
    with open(manifest, "a") as man:
        while True:
            n += 1
            op = rnd.choice(["durable", "durable", "scratch", "clone", "clone", "copy",
                             "rename", "truncate", "unlink", "dir"])
            try:
                if op == "durable":
                    path = os.path.join(mnt, f"d-{cycle}-{n}")
                    data = rnd.randbytes(rnd.choice([0, 100, 4096, 70000, 1 << 20, 3 << 20]))
                    with open(path, "wb") as f:
                        off = 0
                        while off < len(data):
                            k = rnd.randint(1, 300000)
                            f.write(data[off:off + k])
                            off += k
                        f.flush()
                        os.fsync(f.fileno())
                    man.write(f"{os.path.basename(path)} {len(data)} {hashlib.sha256(data).hexdigest()}\n")
                    man.flush()
                    os.fsync(man.fileno())
                    durable.append(path)
                elif op == "scratch":
                    path = os.path.join(mnt, f"s-{rnd.randint(0, 20)}")
                    with open(path, "ab+") as f:
                        f.seek(rnd.randint(0, 2 << 20))
                        f.write(rnd.randbytes(rnd.randint(1, 200000)))
                elif op in ("clone", "copy") and durable:
                    src = rnd.choice(durable)
                    dst = os.path.join(mnt, f"c-{rnd.randint(0, 20)}")
                    if op == "clone":
                        subprocess.run([cowfs, "clone", "--force", src, dst],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    else:
                        subprocess.run(["cp", src, dst], stderr=subprocess.DEVNULL)
                    with open(dst, "r+b") as f:
                        f.seek(rnd.randint(0, max(0, os.path.getsize(dst))))
                        f.write(rnd.randbytes(rnd.randint(1, 50000)))
                        if rnd.random() < 0.3:
                            os.fsync(f.fileno())
                elif op == "rename":
                    a = os.path.join(mnt, f"s-{rnd.randint(0, 20)}")
                    b = os.path.join(mnt, f"c-{rnd.randint(0, 20)}")
                    os.rename(a, b)
                elif op == "truncate":
                    path = os.path.join(mnt, rnd.choice(["s-", "c-"]) + str(rnd.randint(0, 20)))
                    os.truncate(path, rnd.randint(0, 1 << 20))
                elif op == "unlink":
                    os.unlink(os.path.join(mnt, rnd.choice(["s-", "c-"]) + str(rnd.randint(0, 20))))
                elif op == "dir":
                    d = os.path.join(mnt, f"dir-{rnd.randint(0, 5)}")
                    if os.path.isdir(d):
                        for e in os.listdir(d):
                            os.unlink(os.path.join(d, e))
                        os.rmdir(d)
                    else:
                        os.mkdir(d)
                        for i in range(rnd.randint(0, 30)):
                            with open(os.path.join(d, f"f{i}"), "wb") as f:
                                f.write(rnd.randbytes(rnd.randint(0, 9000)))
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno in (107, 5, 103):  # ENOTCONN, EIO, ECONNABORTED: the daemon died
                    return
                raise


if __name__ == "__main__":
    main()
