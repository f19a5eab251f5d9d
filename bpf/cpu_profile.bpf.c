// CPU stack sampler: runs on the software cpu-clock perf event on every CPU.
//
// Only UAPI types, BPF helpers and perf_event context are used, never
// kernel-internal struct layouts, so this compiles against any nearby kernel
// headers (see docs/kernel-headers.md).
//
// Double buffering: every map exists twice (slot 0 and slot 1). User space
// writes the active slot into `config[0]`; the program counts into that slot
// only. To drain, user space flips the slot, waits for programs already
// running to finish, then reads and clears the inactive slot. No sample is
// counted twice or lost at the boundary.
//
// Process generations (processes.h, shared with the network tracer): samples
// are keyed by (pid, generation); a process's first sample announces it, so the
// agent captures it while it lives, and exec or pid reuse starts a new generation.
//
// Stack map collisions: a stack map is a hash table without chaining, so a
// new stack whose hash bucket holds another stack gets -EEXIST. Such a sample
// is not lost: its stacks are copied whole into the `overflow` ring buffer
// and user space adds it to the next drain.
//
// Compile-time parameters (cflags):
//   STACK_MAP_ENTRIES  entries per stack map
//   COUNT_MAP_ENTRIES  entries per count map
//   KERNEL_STACKS      1 to record kernel stacks, 0 to skip them
//   KNOWN_PIDS         see processes.h

#include <uapi/linux/ptrace.h>
#include <uapi/linux/bpf_perf_event.h>

#include "processes.h" // process generations and announcements, shared with network.bpf.c
#include "unwind.h" // unwinding with .eh_frame tables (off unless UNWIND_ENABLED)

#ifndef STACK_MAP_ENTRIES
#define STACK_MAP_ENTRIES 16384
#endif
#ifndef COUNT_MAP_ENTRIES
#define COUNT_MAP_ENTRIES 16384
#endif
#ifndef KERNEL_STACKS
#define KERNEL_STACKS 1
#endif

struct sample_key {
    u32 pid;             // thread group id (the process)
    u32 generation;      // see above; 0 when the process could not be announced
    s32 user_stack_id;   // negative: the -errno bpf_get_stackid returned
    s32 kernel_stack_id; // negative: as above, or -1 when kernel stacks are off
    char comm[16];       // the sampled thread's name
    u64 unwound_stack;   // nonzero: the user stack is ustacks_<slot>[this] (unwind.h)
};

// Counters of samples the kernel side could not record.
enum drop_reason {
    DROP_USER_STACK = 0,   // user stack id lookup failed (map full / collision)
    DROP_KERNEL_STACK = 1, // kernel stack id lookup failed
    DROP_COUNT_MAP = 2,    // count map full: the sample is lost
    DROP_OVERFLOW = 3,     // stack collided and the overflow ring buffer was full
    DROP_REASONS = 4,      // (an announcement lost: processes.h's announce_drops)
};

BPF_ARRAY(config, u32, 1);
BPF_STACK_TRACE(stacks_0, STACK_MAP_ENTRIES);
BPF_STACK_TRACE(stacks_1, STACK_MAP_ENTRIES);
BPF_HASH(counts_0, struct sample_key, u64, COUNT_MAP_ENTRIES);
BPF_HASH(counts_1, struct sample_key, u64, COUNT_MAP_ENTRIES);
BPF_PERCPU_ARRAY(drops, u64, DROP_REASONS);

static __always_inline void count_drop(u32 reason) {
    u64 *value = drops.lookup(&reason);
    if (value)
        (*value)++;
}

#define MAX_STACK_DEPTH 127 // as the kernel's PERF_MAX_STACK_DEPTH

struct overflow_sample {
    u32 pid;
    u32 generation;
    char comm[16];
    s32 user_bytes;   // bytes bpf_get_stack wrote, or a negative errno
    s32 kernel_bytes; // as above; -1 when kernel stacks are off
    u64 user[MAX_STACK_DEPTH];
    u64 kernel[MAX_STACK_DEPTH];
};

BPF_RINGBUF_OUTPUT(overflow, 256); // pages: about 500 collided samples in flight

#include "cpython.h" // Python frames of CPython processes

// Python stacks (see cpython.h for the walk).
BPF_HASH(py_procs, u32, struct py_offsets, PY_PROCS);
BPF_HASH(py_stacks_0, u64, struct py_stack, PY_STACK_ENTRIES);
BPF_HASH(py_stacks_1, u64, struct py_stack, PY_STACK_ENTRIES);
BPF_HASH(py_counts_0, struct py_sample_key, u64, COUNT_MAP_ENTRIES);
BPF_HASH(py_counts_1, struct py_sample_key, u64, COUNT_MAP_ENTRIES);
BPF_PERCPU_ARRAY(py_scratch, struct py_stack, 1); // too big for the BPF stack
BPF_PERCPU_ARRAY(py_errors, u64, 4); // no thread state, stack cut, count map full, ring full

// A stack new in its slot's map, announced: the agent reads its code objects' names while
// the process lives (a process that exits before the drain keeps its Python names).
struct py_new_stack {
    u32 pid;
    u32 depth;
    u64 code[PY_MAX_FRAMES];
};
BPF_RINGBUF_OUTPUT(py_new_stacks, 256); // pages (1 MiB): some 2,600 new stacks in flight

static __always_inline void py_error(u32 reason) {
    u64 *value = py_errors.lookup(&reason);
    if (value)
        (*value)++;
}

// As counts_lookup / counts_insert: one map per branch.
static __always_inline u64 *py_counts_lookup(u32 slot, struct py_sample_key *key) {
    if (slot == 0)
        return py_counts_0.lookup(key);
    return py_counts_1.lookup(key);
}

static __always_inline int py_counts_insert(u32 slot, struct py_sample_key *key, u64 *value) {
    if (slot == 0)
        return py_counts_0.insert(key, value);
    return py_counts_1.insert(key, value);
}

// Stores the stack under its hash; nonzero if the slot's map did not hold it yet.
static __always_inline int py_stacks_insert(u32 slot, u64 *hash, struct py_stack *stack) {
    if (slot == 0)
        return py_stacks_0.insert(hash, stack) == 0;
    return py_stacks_1.insert(hash, stack) == 0;
}

static __always_inline void py_announce(u32 pid, struct py_stack *stack) {
    struct py_new_stack *event = py_new_stacks.ringbuf_reserve(sizeof(struct py_new_stack));
    if (!event) {
        py_error(3);
        return;
    }
    event->pid = pid;
    event->depth = stack->depth;
    __builtin_memcpy(event->code, stack->code, sizeof(event->code));
    py_new_stacks.ringbuf_submit(event, 0);
}

static __always_inline void py_count(u32 slot, struct py_sample_key *key) {
    u64 one = 1;
    u64 *value = py_counts_lookup(slot, key);
    if (value) {
        __sync_fetch_and_add(value, 1);
        return;
    }
    if (py_counts_insert(slot, key, &one) == 0)
        return;
    value = py_counts_lookup(slot, key);
    if (value)
        __sync_fetch_and_add(value, 1);
    else
        py_error(2);
}

// The hook in on_sample: the sample's Python stack, if its process runs a known CPython.
static __always_inline void py_sample(u32 slot, struct sample_key *native, u32 tid) {
    u32 pid = native->pid;
    struct py_offsets *py = py_procs.lookup(&pid);
    if (!py)
        return;
    u32 zero = 0;
    struct py_stack *stack = py_scratch.lookup(&zero);
    if (!stack)
        return;
    u64 state = py_thread_state(py, tid);
    if (!state) {
        py_error(0); // a thread that never ran Python, or one not yet in the list
        return;
    }
    u64 frame = py_pointer(state + py->tstate_frame);
    if (frame && py->cframe_current_frame != PY_NONE)
        frame = py_pointer(frame + py->cframe_current_frame);
    struct py_sample_key key = {};
    key.native = *native;
    key.stack = py_walk(py, frame, stack);
    if (!stack->complete)
        py_error(1);
    if (py_stacks_insert(slot, &key.stack, stack))
        py_announce(pid, stack);
    py_count(slot, &key);
}

// BCC rewrites map method calls at compile time and cannot pass maps around
// as pointers, so the slot is chosen inside these two small accessors.
static __always_inline u64 *counts_lookup(u32 slot, struct sample_key *key) {
    if (slot == 0)
        return counts_0.lookup(key);
    return counts_1.lookup(key);
}

static __always_inline int counts_insert(u32 slot, struct sample_key *key, u64 *value) {
    if (slot == 0)
        return counts_0.insert(key, value);
    return counts_1.insert(key, value);
}

static __always_inline void record(u32 slot, struct sample_key *key) {
    u64 one = 1;
    u64 *value = counts_lookup(slot, key);
    if (value) {
        __sync_fetch_and_add(value, 1);
        return;
    }
    if (counts_insert(slot, key, &one) == 0)
        return;
    // Another CPU may have inserted the same key in between.
    value = counts_lookup(slot, key);
    if (value)
        __sync_fetch_and_add(value, 1);
    else
        count_drop(DROP_COUNT_MAP);
}

// Attached to sched:sched_process_exec (processes.h has the identity's own probe there):
// a new image's unwind tables are loaded anew, and its Python offsets described the old one.
int forget_image(void *ctx) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    unwind_forget(pid);
    py_procs.delete(&pid);
    return 0;
}

// A process's Python offsets go with it: the agent forgets it only drains later.
TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
    if ((u32)id == pid) // the thread group's leader: the process
        py_procs.delete(&pid);
    return 0;
}

static __always_inline void send_overflow(struct bpf_perf_event_data *ctx,
                                          struct sample_key *key) {
    struct overflow_sample *sample = overflow.ringbuf_reserve(sizeof(struct overflow_sample));
    if (!sample) {
        count_drop(DROP_OVERFLOW);
        return;
    }
    sample->pid = key->pid;
    sample->generation = key->generation;
    __builtin_memcpy(sample->comm, key->comm, sizeof(sample->comm));
    sample->user_bytes = bpf_get_stack(ctx, sample->user, sizeof(sample->user), BPF_F_USER_STACK);
    sample->kernel_bytes = -1;
#if KERNEL_STACKS
    sample->kernel_bytes = bpf_get_stack(ctx, sample->kernel, sizeof(sample->kernel), 0);
#endif
    overflow.ringbuf_submit(sample, 0);
}

int on_sample(struct bpf_perf_event_data *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
    if (pid == 0)
        return 0; // the idle task

    u32 zero = 0;
    u32 *slot = config.lookup(&zero);
    u32 active = slot ? *slot : 0;

    struct sample_key key = {};
    key.pid = pid;
    key.generation = generation_of(pid);
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    key.kernel_stack_id = -1;
    key.unwound_stack = unwind_user_stack(ctx, pid, active);

    if (key.unwound_stack) {
        key.user_stack_id = -EFAULT; // no frame-pointer stack: the unwound one stands for it
#if KERNEL_STACKS
        key.kernel_stack_id = active == 0 ? stacks_0.get_stackid(ctx, 0)
                                          : stacks_1.get_stackid(ctx, 0);
#endif
    } else if (active == 0) {
        key.user_stack_id = stacks_0.get_stackid(ctx, BPF_F_USER_STACK);
#if KERNEL_STACKS
        key.kernel_stack_id = stacks_0.get_stackid(ctx, 0);
#endif
    } else {
        key.user_stack_id = stacks_1.get_stackid(ctx, BPF_F_USER_STACK);
#if KERNEL_STACKS
        key.kernel_stack_id = stacks_1.get_stackid(ctx, 0);
#endif
    }
    if (key.user_stack_id == -EEXIST || key.kernel_stack_id == -EEXIST) {
        send_overflow(ctx, &key);
        return 0;
    }
    // -EFAULT means there is no stack of that kind (a kernel thread has no
    // user stack; a user-mode sample may have none in the kernel): not a drop.
    if (key.user_stack_id < 0 && key.user_stack_id != -EFAULT)
        count_drop(DROP_USER_STACK);
    if (KERNEL_STACKS && key.kernel_stack_id < 0 && key.kernel_stack_id != -EFAULT)
        count_drop(DROP_KERNEL_STACK);

    record(active, &key);
    py_sample(active, &key, (u32)id);
    return 0;
}
