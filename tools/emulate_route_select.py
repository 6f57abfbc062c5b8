#!/usr/bin/env python3
"""Emulates, in numpy, the index logic of route_select (src/attention/decode_cuda_route_select.cu)
against the CPU router's rules (src/attention/router.cpp, plan_decode), on the same float
inputs, so that any difference is the rule's and not rounding's:
  quest: keep the k blocks of largest bound, ties to the lower index (CPU: stable sort);
    GPU sort path (stable ascending sort of ~ordered_u32(ub)) and GPU bisection path (k-th
    largest ordered bits, then ties by a scan in rounds of 512 blocks);
  certified: skip the longest prefix, in (cost, index) order, whose per-head sums stay
    <= epsilon (CPU: stop at the first block that does not fit); GPU sort path (first rank
    whose inclusive prefix passes epsilon) and GPU bisection path (threshold bits, then the
    block index among the ties at them).
Also checks the thread mapping behind run 2's race: quest writes list entry j from thread
j % 512 and sort_list reads it from thread j // ITEMS, a different warp for most j, so the
list must be complete (a __syncthreads()) before it is read.
Inputs are drawn with many exact ties (values from a small set, +0 and -0) and edge cases
(k <= 0, k >= blocks, no blocks, a single candidate, epsilon 0).
Usage: python3 tools/emulate_route_select.py [cases]
"""
import sys
import numpy as np

THREADS = 512


def ordered_u32(f):
    f = np.where(f == 0, np.float32(0), f).astype(np.float32)  # -0 as +0 (the CPU's comparison)
    u = f.view(np.uint32).astype(np.uint64)
    return np.where(u & 0x80000000, (~u) & 0xffffffff, u | 0x80000000).astype(np.uint64)


# ---- quest ----
def quest_cpu(ub, k):
    nbr = len(ub)
    order = sorted(range(nbr), key=lambda j: -float(ub[j]))  # Python's sort is stable; -(+0) == -(-0)
    keep = np.zeros(nbr, np.uint8)
    for i in range(min(max(k, 0), nbr)):
        keep[order[i]] = 1
    return keep


def quest_gpu(ub, k, sort_capacity, force_bisect=False):
    nbr = len(ub)
    keep = np.zeros(nbr, np.uint8)
    if k >= nbr or k <= 0:
        keep[:] = 1 if k > 0 else 0
        return keep
    if nbr <= sort_capacity and not force_bisect:
        key = (~ordered_u32(ub)) & 0xffffffff
        order = np.argsort(key, kind='stable')  # cub's radix sort is stable
        keep[order[:k]] = 1
        return keep
    o = ordered_u32(ub).astype(np.int64)
    count_at_least = lambda t: int(np.sum(o >= t))
    lo, hi = 0, 1 << 32
    while hi - lo > 1:
        mid = lo + (hi - lo) // 2
        if count_at_least(mid) >= k:
            lo = mid
        else:
            hi = mid
    above = count_at_least(lo + 1)
    equal_seen = 0
    for j0 in range(0, nbr, THREADS):  # one round: exclusive scan of the ties over 512 threads
        seg = o[j0:j0 + THREADS]
        tie = (seg == lo).astype(np.int64)
        rank = np.cumsum(tie) - tie
        keep[j0:j0 + THREADS] = (seg > lo) | ((tie == 1) & (equal_seen + rank < k - above))
        equal_seen += int(tie.sum())
    return keep


# ---- certified ----
def certified_cpu(bterm, eps):
    nbr, G = bterm.shape
    cost = bterm.max(axis=1) if nbr else np.zeros(0, np.float32)
    order = sorted(range(nbr), key=lambda j: float(cost[j]))
    keep = np.ones(nbr, np.uint8)
    total = np.zeros(G)
    for j in order:
        if not np.all(total + bterm[j].astype(np.float64) <= eps):
            break
        total += bterm[j]
        keep[j] = 0
    return keep


def certified_gpu(bterm, eps, sort_capacity, force_bisect=False):
    nbr, G = bterm.shape
    cost = (bterm.max(axis=1) if nbr else np.zeros(0, np.float32)).astype(np.float32)
    bits = cost.view(np.uint32).astype(np.int64)
    eps_f = np.float32(eps)
    if np.float64(eps_f) > eps:  # __double2float_rd
        eps_f = np.nextafter(eps_f, np.float32(0))
    cand = np.nonzero(cost <= eps_f)[0]
    m = len(cand)

    def fits(sel):
        return bool(np.all(bterm[sel].astype(np.float64).sum(axis=0) <= eps)) if G else True

    T = None
    if fits(cost <= eps_f):
        T = (1 << 64) - 1
    elif m <= sort_capacity and not force_bisect:
        key = bits[cand]
        order = cand[np.argsort(key, kind='stable')]  # candidates in block order, stable
        pref = np.cumsum(bterm[order].astype(np.float64), axis=0)
        bad = np.nonzero(np.any(pref > eps, axis=1))[0]
        f = bad[0]
        T = (int(bits[order[f]]) << 32) | int(order[f])
    else:
        lo, hi = -1, int(eps_f.view(np.uint32))
        while hi - lo > 1:
            mid = lo + (hi - lo) // 2
            if fits(bits <= mid):
                lo = mid
            else:
                hi = mid
        ties = np.nonzero(bits == hi)[0]
        assert len(ties) >= 1, 'no block at the threshold bits'
        jlo, jhi = int(ties.min()), int(ties.max()) + 1
        idx = np.arange(nbr)
        while jhi - jlo > 1:
            mid = jlo + (jhi - jlo) // 2
            if fits((bits < hi) | ((bits == hi) & (idx < mid))):
                jlo = mid
            else:
                jhi = mid
        T = (hi << 32) | jlo
    keys = (bits << 32) | np.arange(nbr)
    skip = (cost <= eps_f) & np.array([int(x) < T for x in keys], dtype=bool)
    return (~skip).astype(np.uint8)


def race_mapping():
    # Writer of entry j: thread j % 512 (quest_select's strided loop); reader: thread j // ITEMS.
    for items in (2, 16):
        n = THREADS * items
        other_warp = sum(1 for j in range(n) if (j % THREADS) // 32 != (j // items) // 32)
        assert other_warp > n // 2, items
        print(f'race mapping, ITEMS={items}: {other_warp} of {n} list entries are read by another warp '
              'than the one that wrote them: a __syncthreads() is needed before sort_list reads')


def main():
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    rng = np.random.default_rng(1)
    race_mapping()
    bad = 0
    # -0 and +0 are equal bounds: the lower index wins (ordered_u32 without the -0 mapping
    # keeps block 2 here instead of block 1).
    ub = np.array([0.0, -0.0, 0.0, -0.0, 1.0], np.float32)
    for cap, force in ((1024, False), (8192, True)):
        if not np.array_equal(quest_cpu(ub, 3), quest_gpu(ub, 3, cap, force)):
            bad += 1
            print(f'quest: -0 and +0 ordered differently (cap {cap} bisect {force})')
    for c in range(cases):
        nbr = int(rng.choice([0, 1, 2, 7, 117, 511, 513, 1024, 1025, 3000, 9000]))
        levels = rng.choice([3, 20, 1000])
        # Quest bounds with many exact ties, +0 and -0.
        ub = (rng.integers(-levels, levels, nbr) / 7.0).astype(np.float32)
        ub[rng.random(nbr) < 0.05] = np.float32(-0.0)
        k = int(rng.choice([-3, 0, 1, nbr // 3, nbr - 1, nbr, nbr + 5]))
        cpu = quest_cpu(ub, k)
        for cap, force in ((1024, False), (8192, False), (8192, True)):
            gpu = quest_gpu(ub, k, cap, force)
            if not np.array_equal(cpu, gpu):
                bad += 1
                print(f'quest case {c}: nbr {nbr} k {k} cap {cap} bisect {force}: '
                      f'{int(np.sum(cpu != gpu))} blocks differ')
        # Certified bound terms: quantised (ties in cost), some blocks above epsilon.
        G = int(rng.choice([1, 3, 8, 12]))
        eps = float(rng.choice([0.0, 1e-4, 1e-2, 0.3]))
        q = rng.choice([1e-7, 1e-5, 1e-3])
        bterm = (rng.integers(0, 40, (nbr, G)) * q).astype(np.float32)
        bterm[rng.random((nbr, G)) < 0.01] = np.float32(1.0)
        cpu = certified_cpu(bterm, eps)
        for cap, force in ((1024, False), (8192, False), (8192, True)):
            gpu = certified_gpu(bterm, eps, cap, force)
            if not np.array_equal(cpu, gpu):
                bad += 1
                print(f'certified case {c}: nbr {nbr} G {G} eps {eps} cap {cap} bisect {force}: '
                      f'{int(np.sum(cpu != gpu))} blocks differ')
    print(f'{cases} cases x 3 paths x (quest, certified): {bad} mismatches')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
