"""Where the time of each request of one `bench/openloop.sh --trace` attack went.

Usage: perf script -F cpu,time,event,trace --ns | python3 bench/openloop_trace.py OUT TID...

Reads the scheduler events (sched_waking, sched_switch) on stdin, OUT.csv (vegeta's start of each
request, wall clock ns, and its latency), OUT.offset (wall clock minus the monotonic clock perf
used), OUT.switches0 and OUT.switches1 (each thread of the server and its context switches before
and after), and TID, the threads that answer requests. A serving thread's wake period runs from
its sched_waking (or from being switched in, when nothing woke it) until it is switched out
asleep. Each request belongs to the first wake period that ends after it started, and its
latency splits into:
  before  start to the server thread's wake-up (vegeta's writing, the loopback), 0 when awake;
  wake    the wake-up to the thread running (the CPU busy, or an idle CPU waking up);
  awake   the thread running to asleep again (its work, and anything that preempted it), or
          to the answer when the thread answered later requests before it slept;
  after   from there to vegeta's answer (vegeta's own CPU: its wake-up, its scheduler).
Exact when one thread serves (servers on one CPU); with several the match is approximate.
"""

import bisect
import collections
import re
import sys

out, tids = sys.argv[1], set(sys.argv[2:])
offset = int(open(f"{out}.offset").read())
requests = []
for line in open(f"{out}.csv"):
    start, latency = line.split(",")
    requests.append((int(start) - offset, int(latency)))

event = re.compile(r"\[(\d+)\]\s+(\d+)\.(\d+):\s+sched:(\w+):\s+(.*)")
switch = re.compile(
    r"prev_comm=(.*) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> next_comm=(.*) next_pid=(\d+)"
)
periods = []  # (woken, running, asleep, on-CPU ns, cpu)
awake = {}  # tid -> [woken, running, on-CPU so far, switched in at, cpu]
others = collections.defaultdict(list)  # cpu -> (from, to, task) of tasks other than these threads
current = {}  # cpu -> (task, since)
for line in sys.stdin:
    m = event.match(line)
    if not m:
        continue
    cpu, t, kind, rest = int(m[1]), int(m[2]) * 10**9 + int(m[3]), m[4], m[5]
    if kind == "sched_waking":
        tid = re.search(r" pid=(\d+) ", rest)[1]
        if tid in tids and tid not in awake:
            awake[tid] = [t, None, 0, None, None]
        continue
    s = switch.match(rest)
    if kind != "sched_switch" or not s:
        continue
    prev_comm, prev, state, next_comm, nxt = s.groups()
    if cpu in current and current[cpu][0]:
        others[cpu].append((current[cpu][1], t, current[cpu][0]))
    current[cpu] = (None if nxt in tids or nxt == "0" else f"{next_comm}[{nxt}]", t)
    if prev in awake and awake[prev][3] is not None:
        awake[prev][2] += t - awake[prev][3]
        awake[prev][3] = None
    if nxt in tids:
        p = awake.setdefault(nxt, [t, None, 0, None, None])
        p[1] = p[1] if p[1] is not None else t
        p[3], p[4] = t, cpu
    if prev in awake and state[0] in "SDI" and awake[prev][1] is not None:
        woken, running, on_cpu, _, on = awake.pop(prev)
        periods.append((woken, running, t, on_cpu, on))
periods.sort(key=lambda p: p[2])
ends = [p[2] for p in periods]

parts = []  # (latency, before, wake, awake, after, period)
for start, latency in requests:
    i = bisect.bisect_right(ends, start)
    if i == len(periods) or start + latency < periods[i][0]:
        continue
    woken, running, asleep, _, _ = periods[i]
    # Each mark as time since the start, in order and within the latency, so that the parts add
    # up to it: a thread that answered several requests in one wake period sleeps after the
    # last answer, and a request matched to the wrong period (rare) lands in one part.
    marks = [0]
    for mark in (woken, running, asleep):
        marks.append(max(marks[-1], min(latency, mark - start)))
    parts.append((latency, *(b - a for a, b in zip(marks, marks[1:] + [latency])), periods[i]))
parts.sort(key=lambda p: p[0])
n = len(parts)
if not n:
    print("  no request matched a wake period of the serving threads")
    sys.exit()


def line(label, chosen):
    k = len(chosen)
    mean = [sum(p[j] for p in chosen) / k / 1e3 for j in range(5)]
    print(
        f"  {label:<16} {k:6} requests, mean {mean[0]:8.1f} = before {mean[1]:6.1f} + wake "
        f"{mean[2]:7.1f} + awake {mean[3]:6.1f} + after {mean[4]:7.1f}"
    )


line("all", parts)
line("fastest half", parts[: n // 2])
# The requests around p99: which parts make the p99.
line("p98 to p99.5", parts[int(0.98 * n) : int(0.995 * n)])
line("slowest 1%", parts[int(0.99 * n) :])
on_cpu = sorted(p[3] for p in periods)


def q(xs, f):
    return xs[min(len(xs) - 1, int(f * len(xs)))] / 1e3


print(
    f"  serving thread on CPU per wake: p50 {q(on_cpu, 0.5):.1f}, p90 {q(on_cpu, 0.9):.1f}, "
    f"p99 {q(on_cpu, 0.99):.1f}; {len(periods)} wakes for {len(requests)} requests"
)

# Other tasks on the serving thread's CPU while the slowest 1% waited for it or ran.
spans = {cpu: sorted(v) for cpu, v in others.items()}
starts = {cpu: [s[0] for s in v] for cpu, v in spans.items()}
busy = collections.Counter()
for p in parts[int(0.99 * n) :]:
    woken, _, asleep, _, cpu = p[5]
    i = max(0, bisect.bisect_left(starts.get(cpu, []), woken) - 1)
    for a, b, task in spans.get(cpu, [])[i:]:
        if a >= asleep:
            break
        if min(b, asleep) > max(a, woken):
            busy[task] += min(b, asleep) - max(a, woken)
slow = max(1, n - int(0.99 * n))
print(
    "  other tasks on its CPU during the slowest 1%, us per request: "
    + (", ".join(f"{task} {ns / slow / 1e3:.1f}" for task, ns in busy.most_common(4)) or "none")
)

# Context switches per request, by thread of the server process.
before = collections.Counter()
for row in open(f"{out}.switches0"):
    name, count = row.rsplit(" ", 1)
    before[name] += int(count)
after = collections.Counter()
for row in open(f"{out}.switches1"):
    name, count = row.rsplit(" ", 1)
    after[name] += int(count)
print(
    "  context switches per request: "
    + ", ".join(
        f"{name} {(after[name] - before[name]) / len(requests):.3f}"
        for name in sorted(after)
        if after[name] > before[name]
    )
)
