#!/usr/bin/env python3
# Which goes first when a process dies holding an OFD lock and a hugetlb memory file: the lock
# or the memory? Forks N holders per layout (lock descriptor below / above the memory file's),
# SIGKILLs each, and watches the lock (F_OFD_GETLK) and the free 2M pages from outside.
# Needs root and 32 free 2M hugepages. Usage: python3 scripts/exit-order.py 100
# Result on this 6.x kernel (2 vCPUs): lock 10 / memfd 20: the lock was never seen free while
# the pages were in use (0 of 100); lock 20 / memfd 10: 61 of 100. The kernel releases a dead
# process's files highest descriptor first, which is why numapin keeps memory above its
# record's lock (`shared::keep_above`; docs/pool.md, weak point 6).
import os, sys, fcntl, struct, mmap, signal, time, ctypes
libc = ctypes.CDLL("libc.so.6", use_errno=True)
MFD_HUGETLB=4; MFD_CLOEXEC=1
L="/dev/shm/exp-lock"
open(L,"w").close()
FREE="/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"
def free(): return int(open(FREE).read())
NP=32
def child(lockfd_no, memfd_no, w):
    a = os.open(L, os.O_RDWR)
    fl = struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 1, 0)
    fcntl.fcntl(a, fcntl.F_OFD_SETLK, fl)
    b = libc.memfd_create(b"exp", MFD_HUGETLB)
    os.ftruncate(b, NP*2*1024*1024)
    m = mmap.mmap(b, NP*2*1024*1024)
    for i in range(NP): m[i*2*1024*1024] = 1
    m.close()
    os.dup2(a, lockfd_no); os.close(a)
    os.dup2(b, memfd_no); os.close(b)
    os.write(w, b"x")
    while True: time.sleep(1)
def trial(lockfd_no, memfd_no):
    base = free()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r); child(lockfd_no, memfd_no, w)
    os.close(w); os.read(r, 1); os.close(r)
    probe = os.open(L, os.O_RDWR)
    q = struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 1, 0)
    assert free() == base - NP
    os.kill(pid, signal.SIGKILL)
    lock_first = pages_first = False
    while True:
        res = fcntl.fcntl(probe, fcntl.F_OFD_GETLK, q)
        locked = struct.unpack("hhqqi4x", res)[0] != fcntl.F_UNLCK
        f = free()
        if not locked and f < base: lock_first = True
        if locked and f == base: pages_first = True
        if not locked and f == base: break
    os.close(probe); os.waitpid(pid, 0)
    return lock_first, pages_first
for (a, b) in [(10, 20), (20, 10)]:
    lf = pf = 0
    for _ in range(int(sys.argv[1])):
        x, y = trial(a, b); lf += x; pf += y
    print(f"lock fd {a}, memfd {b}: lock freed first seen {lf}, pages freed first seen {pf}")
os.unlink(L)
