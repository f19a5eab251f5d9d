// User stacks without frame pointers: unwinding with tables built from the
// binaries' call-frame information (.eh_frame), x86-64 only.
//
// The agent writes, per process, the executable ranges it maps (start, end,
// load bias, and where the range's table lies in `unwind_rows`), and the
// tables' rows (symbolizer/cfi.py: sorted by link-time address, each saying
// how to find the caller's frame from there on). The walk starts from the
// registers the sample interrupted and takes, per frame: the range holding
// the address (linear, at most UNWIND_RANGES), the row (binary search,
// at most UNWIND_SEARCH_STEPS), then CFA = rsp or rbp + offset, the return
// address at CFA-8 and rbp from CFA+offset if the row saves it. Where no range
// or row covers an address (JIT code, a file without CFI) it takes a
// frame-pointer step instead. User memory is read with bpf_probe_read_user
// only; every loop is bounded (kernel 5.3+); no kernel struct is read.
//
// The unwound stack is counted like a stack id: stored once in `ustacks_<slot>`
// under a hash of its frames, and the sample key carries the hash.
//
// Samples taken in kernel mode (in a system call) carry the kernel's
// registers; the user's are those the kernel saved on entry (bpf_task_pt_regs).
// Processes without tables use bpf_get_stackid's frame-pointer walk as before.
//
// Samples of processes without tables are also counted per process in
// `unwind_wanted`: the agent loads the tables of the processes that run most
// first (a busy process should not wait behind hundreds of idle ones).
//
// Compile-time parameters (cflags):
//   UNWIND_ENABLED     1 to unwind with tables, 0 (default) to leave it all out
//   UNWIND_ROWS        rows of all tables together
//   UNWIND_PROCESSES   processes with tables (LRU)
//   UNWIND_STACKS      entries per unwound-stack map

#ifndef UNWIND_ENABLED
#define UNWIND_ENABLED 0
#endif
#ifndef UNWIND_ROWS
#define UNWIND_ROWS 1
#endif
#ifndef UNWIND_PROCESSES
#define UNWIND_PROCESSES 1
#endif
#ifndef UNWIND_STACKS
#define UNWIND_STACKS 1
#endif

#ifndef UNWIND_MAX_FRAMES
#define UNWIND_MAX_FRAMES 96 // the verifier refuses 127 (its 8,192 pending branches)
#endif
#define UNWIND_WANTED 1024      // processes sampled without tables, counted (LRU)
#define UNWIND_RANGES 32        // executable mappings with a table, per process (a power of 2)
#define UNWIND_RANGE_STEPS 5    // log2(UNWIND_RANGES)
#define UNWIND_SEARCH_STEPS 21  // 2^21 rows: more than one table may hold (cfi.MAX_ROWS)

// Row kinds and rbp rules, as in symbolizer/cfi.py.
#define UNWIND_NONE 0
#define UNWIND_CFA_RSP 1
#define UNWIND_CFA_RBP 2
#define UNWIND_CFA_PLT 3
#define UNWIND_OUTERMOST 4
#define UNWIND_UNSUPPORTED 5
#define UNWIND_RBP_AT_CFA 1

// What happened to user stacks (per-CPU counters, read by the agent).
enum unwind_outcome {
    UNWOUND_WITH_TABLES = 0, // walked with the process's tables
    UNWIND_NO_TABLES = 1,    // the process has none (yet): frame pointers
    UNWIND_KERNEL_MODE = 2,  // sampled in the kernel, no user registers: frame pointers
    UNWIND_TRUNCATED = 3,    // the walk stopped early (unsupported row, bad read, depth)
    UNWIND_MAP_FULL = 4,     // the unwound-stack map was full: frame pointers
    UNWIND_OUTCOMES = 5,
};

struct unwind_row {
    u64 pc; // link-time address from which the row holds
    s32 cfa_offset;
    s16 rbp_offset;
    u8 kind;
    u8 rbp;
};

struct unwind_range {
    u64 start; // [start, end): runtime addresses
    u64 end;
    u64 bias;  // runtime address - link-time address
    u32 first_row; // in unwind_rows
    u32 rows;
};

struct unwind_process {
    u32 ranges;
    u32 unused;
    struct unwind_range range[UNWIND_RANGES];
};

struct unwound_stack {
    u32 depth;
    u32 unused;
    u64 frames[UNWIND_MAX_FRAMES];
};

#if UNWIND_ENABLED
BPF_ARRAY(unwind_rows, struct unwind_row, UNWIND_ROWS);
BPF_TABLE("lru_hash", u32, struct unwind_process, unwind_processes, UNWIND_PROCESSES);
BPF_HASH(ustacks_0, u64, struct unwound_stack, UNWIND_STACKS);
BPF_HASH(ustacks_1, u64, struct unwound_stack, UNWIND_STACKS);
BPF_PERCPU_ARRAY(unwind_scratch, struct unwound_stack, 1);
BPF_PERCPU_ARRAY(unwind_outcomes, u64, UNWIND_OUTCOMES);
BPF_TABLE("lru_hash", u32, u64, unwind_wanted, UNWIND_WANTED);

static __always_inline void unwind_count(u32 outcome) {
    u64 *value = unwind_outcomes.lookup(&outcome);
    if (value)
        (*value)++;
}

// The row holding link-time address `pc` in `range`'s table, or NULL.
static __always_inline struct unwind_row *unwind_find_row(struct unwind_range *range, u64 pc) {
    u32 low = range->first_row, high = range->first_row + range->rows;
    struct unwind_row *row = unwind_rows.lookup(&low);
    if (!row || range->rows == 0 || row->pc > pc)
        return NULL;
    // Invariant: rows[low].pc <= pc < rows[high].pc (high past the end counts as above).
    for (int step = 0; step < UNWIND_SEARCH_STEPS; step++) {
        if (low + 1 >= high)
            break;
        u32 middle = low + (high - low) / 2;
        row = unwind_rows.lookup(&middle);
        if (!row)
            return NULL;
        if (row->pc <= pc)
            low = middle;
        else
            high = middle;
    }
    if (low + 1 < high)
        return NULL; // not found within the steps: a table larger than promised
    return unwind_rows.lookup(&low);
}

// Hides a value's known bounds from the compiler, so that it keeps the masks
// the verifier needs (clang drops a mask it can prove useless).
#define unwind_opaque(x) asm volatile("" : "+r"(x))

// Copies the range holding `pc` into `found`; 0 if none does. Ranges are sorted
// by start. A binary search and a copy, not a scan returning a pointer: the
// verifier follows every branch still pending across all frames of the walk
// (8,192 at most), and pointers at different offsets would not converge.
static __always_inline int unwind_find_range(struct unwind_process *process, u64 pc,
                                             struct unwind_range *found) {
    u32 low = 0, high = process->ranges;
    if (high == 0 || high > UNWIND_RANGES)
        return 0;
    for (int step = 0; step < UNWIND_RANGE_STEPS; step++) {
        if (low + 1 >= high)
            break;
        u32 middle = (low + high) / 2;
        unwind_opaque(middle);
        if (process->range[middle & (UNWIND_RANGES - 1)].start <= pc)
            low = middle;
        else
            high = middle;
    }
    unwind_opaque(low);
    __builtin_memcpy(found, &process->range[low & (UNWIND_RANGES - 1)], sizeof(*found));
    return found->start <= pc && pc < found->end;
}

struct unwind_regs {
    u64 pc, sp, bp;
};

// One frame up from `regs`; 0 to go on, 1 at the end of the stack, -1 when stuck.
static __always_inline int unwind_step(struct unwind_process *process, struct unwind_regs *regs,
                                       int leaf) {
    // Return addresses point after the call, possibly into the next function.
    u64 lookup = leaf ? regs->pc : regs->pc - 1;
    struct unwind_range range;
    struct unwind_row *row = NULL;
    if (unwind_find_range(process, lookup, &range))
        row = unwind_find_row(&range, lookup - range.bias);
    u8 kind = row ? row->kind : UNWIND_NONE;
    u64 cfa, return_address = 0, bp = regs->bp;
    if (kind == UNWIND_OUTERMOST)
        return 1;
    if (kind == UNWIND_UNSUPPORTED || kind > UNWIND_OUTERMOST)
        return -1;
    if (kind == UNWIND_NONE) {
        // A frame-pointer step: [rbp] is the caller's rbp, [rbp+8] the return address.
        if (regs->bp == 0)
            return 1;
        if (regs->bp < regs->sp)
            return -1;
        cfa = regs->bp + 16;
        if (bpf_probe_read_user(&bp, sizeof(bp), (void *)regs->bp) != 0)
            return -1;
    } else {
        if (kind == UNWIND_CFA_RBP)
            cfa = regs->bp + row->cfa_offset;
        else if (kind == UNWIND_CFA_PLT)
            cfa = regs->sp + 8 + (((regs->pc & 15) >= (u64)row->cfa_offset) ? 8 : 0);
        else
            cfa = regs->sp + row->cfa_offset;
        if (row->rbp == UNWIND_RBP_AT_CFA &&
            bpf_probe_read_user(&bp, sizeof(bp), (void *)(cfa + row->rbp_offset)) != 0)
            return -1;
    }
    if (bpf_probe_read_user(&return_address, sizeof(return_address), (void *)(cfa - 8)) != 0)
        return -1;
    if (return_address == 0)
        return 1;
    if (cfa <= regs->sp)
        return -1; // the stack grows down: a caller's frame is always above
    regs->pc = return_address;
    regs->sp = cfa;
    regs->bp = bp;
    return 0;
}

// The user's registers of a sample taken in the kernel (a system call, a fault,
// an interrupt), as the kernel saved them on entry: bpf_task_pt_regs (kernel
// 5.15+) gives where they are, and x86-64's struct pt_regs is the UAPI layout
// (the one perf_event programs are given). Nonzero if there are none.
static __always_inline int unwind_user_regs(struct unwind_regs *regs) {
    struct pt_regs *user = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    struct pt_regs saved = {};
    if (!user || bpf_probe_read_kernel(&saved, sizeof(saved), user) != 0 || (saved.cs & 3) != 3)
        return -1;
    // The pc is where the process resumes: after a `syscall`, still inside the function
    // that made it; looked up as is, like an interrupted pc.
    regs->pc = saved.ip;
    regs->sp = saved.sp;
    regs->bp = saved.bp;
    return 0;
}

// Unwinds the user stack of the sampled process with its tables and stores it in
// `ustacks_<slot>`; returns its hash, or 0 if the caller should take
// bpf_get_stackid's frame-pointer stack instead.
static __always_inline u64 unwind_user_stack(struct bpf_perf_event_data *ctx, u32 pid, u32 slot) {
    struct unwind_process *process = unwind_processes.lookup(&pid);
    if (!process) {
        unwind_count(UNWIND_NO_TABLES);
        u64 one = 1;
        u64 *wanted = unwind_wanted.lookup(&pid);
        if (wanted)
            __sync_fetch_and_add(wanted, 1);
        else
            unwind_wanted.update(&pid, &one);
        return 0;
    }
    struct unwind_regs regs = {.pc = ctx->regs.ip, .sp = ctx->regs.sp, .bp = ctx->regs.bp};
    if ((ctx->regs.cs & 3) != 3 && unwind_user_regs(&regs) != 0) {
        unwind_count(UNWIND_KERNEL_MODE);
        return 0;
    }
    u32 zero = 0;
    struct unwound_stack *stack = unwind_scratch.lookup(&zero);
    if (!stack)
        return 0;
    int outcome = -1;
    u64 hash = 14695981039346656037ULL; // FNV-1a over the frames
    u32 depth = 0;
    for (int i = 0; i < UNWIND_MAX_FRAMES; i++) {
        stack->frames[i] = regs.pc;
        hash = (hash ^ regs.pc) * 1099511628211ULL;
        depth = i + 1;
        outcome = unwind_step(process, &regs, i == 0);
        if (outcome != 0)
            break;
    }
    stack->depth = depth;
    hash |= 1; // never 0, which means "not unwound"
    unwind_count(outcome != 1 ? UNWIND_TRUNCATED : UNWOUND_WITH_TABLES);
    int stored = slot == 0 ? ustacks_0.insert(&hash, stack) : ustacks_1.insert(&hash, stack);
    if (stored != 0 && stored != -EEXIST) {
        unwind_count(UNWIND_MAP_FULL);
        return 0;
    }
    return hash;
}

// Forget a process's ranges when it execs: its new image has other mappings.
static __always_inline void unwind_forget(u32 pid) {
    unwind_processes.delete(&pid);
}
#else
static __always_inline u64 unwind_user_stack(struct bpf_perf_event_data *ctx, u32 pid, u32 slot) {
    return 0;
}
static __always_inline void unwind_forget(u32 pid) {}
#endif
