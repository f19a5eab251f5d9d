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
// Compile-time parameters (cflags):
//   STACK_MAP_ENTRIES  entries per stack map
//   COUNT_MAP_ENTRIES  entries per count map
//   KERNEL_STACKS      1 to record kernel stacks, 0 to skip them

#include <uapi/linux/ptrace.h>
#include <uapi/linux/bpf_perf_event.h>

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
    u32 tid;             // 0: threads are folded into their process
    s32 user_stack_id;   // negative: the -errno bpf_get_stackid returned
    s32 kernel_stack_id; // negative: as above, or -1 when kernel stacks are off
    char comm[16];       // the sampled thread's name
};

// Counters of samples the kernel side could not record.
enum drop_reason {
    DROP_USER_STACK = 0,   // user stack id lookup failed (map full / collision)
    DROP_KERNEL_STACK = 1, // kernel stack id lookup failed
    DROP_COUNT_MAP = 2,    // count map full: the sample is lost
    DROP_REASONS = 3,
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

static __always_inline void fill_key(struct sample_key *key, u32 pid) {
    key->pid = pid;
    key->tid = 0;
    bpf_get_current_comm(&key->comm, sizeof(key->comm));
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

int on_sample(struct bpf_perf_event_data *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
    if (pid == 0)
        return 0; // the idle task

    u32 zero = 0;
    u32 *slot = config.lookup(&zero);
    u32 active = slot ? *slot : 0;

    struct sample_key key = {};
    fill_key(&key, pid);
    key.kernel_stack_id = -1;

    if (active == 0) {
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
    // -EFAULT means there is no stack of that kind (a kernel thread has no
    // user stack; a user-mode sample may have none in the kernel): not a drop.
    if (key.user_stack_id < 0 && key.user_stack_id != -EFAULT)
        count_drop(DROP_USER_STACK);
    if (KERNEL_STACKS && key.kernel_stack_id < 0 && key.kernel_stack_id != -EFAULT)
        count_drop(DROP_KERNEL_STACK);

    record(active, &key);
    return 0;
}
