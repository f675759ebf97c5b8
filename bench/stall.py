#!/usr/bin/env python3
"""bench/stall.py DIR [DIR...]: how long metadata requests stall behind a big write.

In each DIR (a mount point, or any directory), fio writes SIZE (default 4G) sequentially in
1 MiB blocks with an fsync at the end, while this script creates an empty file every 10 ms
and times each create. Prints, per DIR, the number of creates and their median, p99 and
maximum latency. Several DIRs run one after the other, ROUNDS times (interleaved). Everything
it writes is removed afterwards. Needs fio.

    sudo python3 bench/stall.py --rounds 3 /mnt/old-cowfs /mnt/new-cowfs
"""

import argparse
import os
import shutil
import subprocess
import sys
import time


def one(d, size):
    work = os.path.join(d, "stall.bench")
    os.makedirs(work)
    fio = subprocess.Popen(
        ["fio", "--output=/dev/null", "--name=stall", "--filename=" + work + "/big",
         "--rw=write", "--bs=1M", "--size=" + size, "--ioengine=psync", "--end_fsync=1",
         "--fallocate=none"])
    lat = []
    while fio.poll() is None:
        t = time.monotonic()
        fd = os.open("%s/f%d" % (work, len(lat)), os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
        lat.append(time.monotonic() - t)
        time.sleep(0.01)
    shutil.rmtree(work)
    if fio.returncode != 0:
        sys.exit("fio failed in %s (exit %d)" % (d, fio.returncode))
    if not lat:
        sys.exit("fio ended before the first create in %s" % d)
    lat.sort()
    ms = lambda x: x * 1e3
    return "%s: %d creates, median %.2f ms, p99 %.1f ms, max %.1f ms" % (
        d, len(lat), ms(lat[len(lat) // 2]), ms(lat[int(len(lat) * 0.99)]), ms(lat[-1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--size", default="4G", help="bytes fio writes (default 4G)")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if shutil.which("fio") is None:
        sys.exit("stall.py: needs fio (apt-get install fio)")
    for d in a.dirs:
        if not os.path.isdir(d):
            sys.exit("stall.py: %s is not a directory" % d)
        if os.path.exists(os.path.join(d, "stall.bench")):
            sys.exit("stall.py: %s/stall.bench exists: remove it first" % d)
    for r in range(a.rounds):
        for d in a.dirs:
            subprocess.run(["sync"], check=False)
            time.sleep(2)
            print("round %d: %s" % (r + 1, one(d, a.size)), flush=True)


if __name__ == "__main__":
    main()
