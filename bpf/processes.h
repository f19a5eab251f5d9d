// Process identity, one for all of the agent's BPF programs (cpu_profile.bpf.c and
// network.bpf.c), which user space compiles as one module so that they share these maps
// (profiler-agent/programs.py). Included by each program; the guard keeps one copy.
//
// Generations: the first event of a process the agent has not seen yet (a CPU
// sample, a network call) gives it a new generation number and announces (pid,
// generation) through the `new_processes` ring buffer, so the agent reads its
// memory map and opens its binaries while it lives: a process that exits before
// the next drain is still symbolized. Every program keys what it counts by (pid,
// generation). exec() forgets the pid and fork() the child's, so after exec (a new
// memory map) or pid reuse (a new process) events carry a new generation and are
// never symbolized or labelled with another image's data. The generation stands
// in for the process start time, which BPF could read only from kernel-internal
// structs.
//
// A pid is forgotten when it is handed out again, not when its process exits:
// events on the exit path (after sched_process_exit) keep the process's
// generation instead of announcing a process that is already gone. Every new
// process starts with a fork, and the fork tracepoint runs before the child can.
//
// Parents: fork() records the child's parent (and the parent's generation, if it
// was announced before), exec() drops it. An announcement carries it, so a forked
// child that has not exec'd and exits before the agent captures it is
// symbolized with its parent's image: the memory it was forked with.
//
// Compile-time parameter (cflags):
//   KNOWN_PIDS  processes remembered as announced (LRU); past this the least
//               recently seen is forgotten and announced again when seen.

#ifndef PODFLAME_PROCESSES_H
#define PODFLAME_PROCESSES_H

#ifndef KNOWN_PIDS
#define KNOWN_PIDS 32768
#endif

struct parent {
    u32 pid;        // the forking process (thread group id)
    u32 generation; // its generation at the fork; 0 if it had not been announced
};

// The event of `new_processes` (read by profiler-agent/programs.py).
struct new_process {
    u32 pid;
    u32 generation;
    struct parent parent; // pid 0: none known (exec'd, or forked before the agent started)
};

BPF_TABLE("lru_hash", u32, u32, known_pids, KNOWN_PIDS); // pid -> generation
// child pid -> its parent, from fork until exec. A thread's creation adds an
// entry under the thread's id, which is never looked up as a process's pid.
BPF_TABLE("lru_hash", u32, struct parent, parents, KNOWN_PIDS);
BPF_RINGBUF_OUTPUT(new_processes, 16); // pages: room for thousands of pids
// Announcements lost to a full ring buffer (the process is announced at its next event).
BPF_PERCPU_ARRAY(announce_drops, u64, 1);

// The generation of `pid`'s image, announcing it first if it is new; 0 if it
// could not be announced.
static __always_inline u32 generation_of(u32 pid) {
    u32 *known = known_pids.lookup(&pid);
    if (known)
        return *known;
    // Generations only need to differ between announcements of one pid; the
    // clock does that without a shared counter (BCC's default BPF target
    // cannot use the value an atomic add returns). Odd, so never 0.
    struct new_process event = {.pid = pid};
    struct parent *parent = parents.lookup(&pid);
    if (parent)
        event.parent = *parent;
    event.generation = (u32)bpf_ktime_get_ns() | 1;
    // Only the CPU whose insert succeeds announces: one event per generation.
    if (known_pids.insert(&pid, &event.generation) != 0) {
        known = known_pids.lookup(&pid);
        return known ? *known : 0;
    }
    // Announcements are rare (one per process image): wake the reader for
    // each, rather than leave it to the adaptive wakeup, which can leave an
    // event waiting until the next one.
    if (new_processes.ringbuf_output(&event, sizeof(event), BPF_RB_FORCE_WAKEUP) != 0) {
        known_pids.delete(&pid); // announce again at the next event
        u32 zero = 0;
        u64 *dropped = announce_drops.lookup(&zero);
        if (dropped)
            (*dropped)++;
        return 0;
    }
    return event.generation;
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    known_pids.delete(&pid);
    parents.delete(&pid); // a new image: the parent's no longer describes it
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork) {
    u32 child = args->child_pid; // a thread's id when a thread is created: never a live pid
    known_pids.delete(&child);
    // The tracepoint runs in the parent: the current thread group is the parent process.
    struct parent parent = {.pid = bpf_get_current_pid_tgid() >> 32};
    u32 *generation = known_pids.lookup(&parent.pid);
    if (generation)
        parent.generation = *generation;
    parents.update(&child, &parent);
    return 0;
}

#endif // PODFLAME_PROCESSES_H
