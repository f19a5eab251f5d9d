// Network system calls: latency histograms, waiting stacks and connect() outcomes.
//
// Programs run on the syscalls:sys_enter_* / sys_exit_* tracepoints (kprobes
// may be unavailable). Their context is declared below from the stable layout
// every syscall tracepoint format shows (an 8-byte common header, the syscall
// number, then each argument, or the return value, as 8 bytes from offset 16);
// user space checks each format before attaching (profiler-agent/network.py).
// Only UAPI constants, BPF helpers and tracepoint formats are used, never a
// kernel-internal struct: the headers BCC compiles against may not match the
// running kernel (docs/kernel-headers.md).
//
// Socket descriptors. read/write/readv/writev count only when the descriptor
// is a socket, and nothing in a tracepoint's context says so. The program
// keeps, per process, a bitmap of its socket descriptors (and of those marked
// close-on-exec), updated from the syscalls that create, copy and close
// descriptors: socket, socketpair, accept, accept4, dup, dup2, dup3,
// fcntl(F_DUPFD*, F_SETFD), close, close_range; fork copies the bitmap
// (task:task_newtask, unless the child shares the descriptor table), exec
// drops the close-on-exec ones, exit forgets the process. A descriptor that
// works with a socket-only call (send*, recv*, connect, getsockopt) is a
// socket too, which catches sockets received over a unix socket once used so.
// User space seeds the bitmaps from /proc/PID/fd at start.
//
// Double buffering and drop counters work as in cpu_profile.bpf.c: user space
// writes the active slot into net_config[0], the programs count into that slot
// only, and a drain flips it and reads the old. Process generations are the CPU
// sampler's (processes.h): both programs are compiled into one module and share
// them, so a process has one identity whichever program sees it first. Names
// here that the CPU program has too carry a net_ or wait_ prefix.
//
// Compile-time parameters (cflags):
//   INFLIGHT_ENTRIES    threads inside a traced call at once
//   LATENCY_ENTRIES     (process, syscall) histograms per slot
//   CONNECTION_ENTRIES  (process, destination, result) histograms per slot
//   WAIT_ENTRIES        (process, stack) duration sums per slot
//   WAIT_STACK_ENTRIES  stacks per slot
//   FD_TABLES           processes with socket descriptors
//   FD_HIGH_WORDS       64-descriptor words for descriptors from 4096 on
//   PENDING_ENTRIES     non-blocking connects waiting for their outcome
//   KNOWN_PIDS          see processes.h
//   STACK_MIN_NS        calls this long or longer always record their stack;
//                       shorter ones with probability duration / STACK_MIN_NS,
//                       weighted STACK_MIN_NS (an unbiased estimate, at a
//                       bounded number of stack walks per second)
//   NEWTASK_PID_OFFSET, NEWTASK_FLAGS_OFFSET  task_newtask field offsets,
//                       read from its format by user space
//   BUCKET_SELFTEST     1 adds a program that runs bucket_of() over test values

#include <uapi/linux/ptrace.h>

#include "processes.h" // process generations and announcements, shared with cpu_profile.bpf.c

#ifndef INFLIGHT_ENTRIES
#define INFLIGHT_ENTRIES 16384
#endif
#ifndef LATENCY_ENTRIES
#define LATENCY_ENTRIES 4096
#endif
#ifndef CONNECTION_ENTRIES
#define CONNECTION_ENTRIES 2048
#endif
#ifndef WAIT_ENTRIES
#define WAIT_ENTRIES 16384
#endif
#ifndef WAIT_STACK_ENTRIES
#define WAIT_STACK_ENTRIES 4096
#endif
#ifndef FD_TABLES
#define FD_TABLES 16384
#endif
#ifndef FD_HIGH_WORDS
#define FD_HIGH_WORDS 16384
#endif
#ifndef PENDING_ENTRIES
#define PENDING_ENTRIES 8192
#endif
#ifndef STACK_MIN_NS
#define STACK_MIN_NS 1000000
#endif
#ifndef NEWTASK_PID_OFFSET
#define NEWTASK_PID_OFFSET 8
#endif
#ifndef NEWTASK_FLAGS_OFFSET
#define NEWTASK_FLAGS_OFFSET 32
#endif
#ifndef BUCKET_SELFTEST
#define BUCKET_SELFTEST 0
#endif

// UAPI constants (linux/socket.h, linux/net.h, asm-generic/errno*.h,
// linux/fcntl.h, linux/close_range.h, linux/sched.h), spelled out so that no
// header beyond ptrace.h is needed (guarded where the CPU program's headers,
// compiled into the same module, spell one differently).
#define AF_INET 2
#define AF_INET6 10
#define SOCK_CLOEXEC 02000000
#define O_CLOEXEC 02000000
#define SOL_SOCKET 1
#define SO_ERROR 4
#define E_BADF 9
#define E_AGAIN 11
#define E_NOTSOCK 88
#define E_ALREADY 114
#define E_INPROGRESS 115
#define E_ISCONN 106
#define F_DUPFD 0
#define F_SETFD 2
#ifndef F_DUPFD_CLOEXEC
#define F_DUPFD_CLOEXEC 1030
#endif
#define FD_CLOEXEC 1
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#ifndef CLONE_FILES
#define CLONE_FILES 0x00000400ULL
#endif
#ifndef CLONE_THREAD
#define CLONE_THREAD 0x00010000ULL
#endif

// Descriptors 0..TABLE_FDS-1 live in a process's table (a power of two).
#define TABLE_WORDS 64
#define TABLE_FDS (TABLE_WORDS * 64)

// Histogram buckets: must equal podflame.model.network.bucket_of.
#define SUB_BUCKET_BITS 3
#define SUB_BUCKETS (1 << SUB_BUCKET_BITS)
#define MAX_EXPONENT 40
#define OVERFLOW_BUCKET ((MAX_EXPONENT - SUB_BUCKET_BITS + 1) * SUB_BUCKETS)
#define BUCKET_COUNT (OVERFLOW_BUCKET + 1)

// The measured calls; the order is NETWORK_SYSCALLS in network.py.
enum call_kind {
    CALL_CONNECT = 0,
    CALL_ACCEPT,
    CALL_ACCEPT4,
    CALL_SENDTO,
    CALL_RECVFROM,
    CALL_SENDMSG,
    CALL_RECVMSG,
    CALL_SENDMMSG,
    CALL_RECVMMSG,
    CALL_READ,
    CALL_WRITE,
    CALL_READV,
    CALL_WRITEV,
    MEASURED_CALLS,
    // Bookkeeping calls: remembered between entry and exit, not measured.
    CALL_SOCKET = MEASURED_CALLS,
    CALL_SOCKETPAIR,
    CALL_DUP,
    CALL_GETSOCKOPT,
    CALL_NONE = 0xffff, // the thread is in no traced call
};

// Must match DROP_REASONS in network.py.
enum net_drop_reason {
    NET_DROP_INFLIGHT = 0,   // in-flight map full: a call was not measured
    NET_DROP_LATENCY_MAP,    // latency map full: a call was not counted
    NET_DROP_CONNECTION_MAP, // connection map full: a connect outcome was lost
    NET_DROP_WAIT_MAP,       // wait map full: a call's time is missing from net_wait
    NET_DROP_USER_STACK,     // stack id lookup failed; the time went to "no stack"
    NET_DROP_FD_MAP,         // socket bitmap map full: a socket was not remembered
    NET_DROP_REASONS,
};

// Syscall tracepoint contexts (see the formats under events/syscalls).
struct syscall_enter {
    u64 common;
    s32 nr;
    u32 pad;
    u64 args[6];
};

struct syscall_exit {
    u64 common;
    s32 nr;
    u32 pad;
    s64 ret;
};

// A call between its entry and its exit, per thread.
struct call {
    u64 start_ns;
    u64 aux;     // connect: unused; socket: type; socketpair: int[2] pointer;
                 // dup: close-on-exec; getsockopt: optval pointer
    u32 fd;
    u16 kind;
    u16 family;  // connect: AF_INET or AF_INET6 when the address was read, else 0
    u16 port;    // connect: host byte order
    u16 pad;
    u8 addr[16]; // connect: IPv4 in the first 4 bytes, or IPv6
    u32 generation; // the thread's process image, set when the entry is made
};

struct latency_key {
    u32 pid;
    u32 generation;
    u32 kind;
    u32 pad;
};

// One histogram: the latency map uses every field, the connection map count,
// sum_ns, max_ns and buckets. max_ns is updated without an atomic
// compare-and-swap (BCC's default target lacks it): two CPUs raising it at the
// same instant may keep the lower value.
struct histogram {
    u64 count;
    u64 errors;
    u64 eagain;
    u64 sum_ns;
    u64 max_ns;
    u32 buckets[BUCKET_COUNT];
};

struct connection_key {
    u32 pid;
    u32 generation;
    u16 family;
    u16 port;
    u32 result; // 0, or the positive errno (EINPROGRESS: not followed to the end)
    u8 addr[16];
};

struct wait_key {
    u32 pid;
    u32 generation;
    s32 user_stack_id; // negative: the -errno bpf_get_stackid returned
    u32 pad;
    char comm[16];
};

// A process's socket descriptors below TABLE_FDS, as bitmaps.
struct fd_table {
    u32 id; // random per image; high words of another id are stale
    u32 pad;
    u64 sockets[TABLE_WORDS];
    u64 cloexec[TABLE_WORDS];
};

// Socket descriptors from TABLE_FDS on, 64 per word, valid while `id` is the
// table's: exit, exec and fork change or drop the table without a loop.
struct fd_key {
    u32 pid;
    u32 word; // descriptors 64 * word .. 64 * word + 63
};

struct high_word {
    u32 id;
    u32 pad;
    u64 sockets;
};

struct socket_key {
    u32 pid;
    u32 fd;
};

struct pending_connect {
    u64 start_ns;
    u64 call_ns; // duration of the connect() call that returned EINPROGRESS
    u32 generation;
    u16 family;
    u16 port;
    u8 addr[16];
};

BPF_ARRAY(net_config, u32, 1);
BPF_HASH(inflight, u64, struct call, INFLIGHT_ENTRIES);
BPF_F_TABLE("hash", struct latency_key, struct histogram, latency_0, LATENCY_ENTRIES,
            BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct latency_key, struct histogram, latency_1, LATENCY_ENTRIES,
            BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct connection_key, struct histogram, connections_0,
            CONNECTION_ENTRIES, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", struct connection_key, struct histogram, connections_1,
            CONNECTION_ENTRIES, BPF_F_NO_PREALLOC);
BPF_HASH(waits_0, struct wait_key, u64, WAIT_ENTRIES);
BPF_HASH(waits_1, struct wait_key, u64, WAIT_ENTRIES);
BPF_STACK_TRACE(wait_stacks_0, WAIT_STACK_ENTRIES);
BPF_STACK_TRACE(wait_stacks_1, WAIT_STACK_ENTRIES);
BPF_F_TABLE("hash", u32, struct fd_table, fd_tables, FD_TABLES, BPF_F_NO_PREALLOC);
BPF_TABLE("lru_hash", struct fd_key, struct high_word, fd_high, FD_HIGH_WORDS);
BPF_ARRAY(zero_table, struct fd_table, 1); // never written: a new table's value
BPF_TABLE("lru_hash", struct socket_key, struct pending_connect, pending, PENDING_ENTRIES);
BPF_ARRAY(zero_histogram, struct histogram, 1); // never written: a new entry's value
BPF_PERCPU_ARRAY(net_drops, u64, NET_DROP_REASONS);
static __always_inline void net_drop(u32 reason) {
    u64 *value = net_drops.lookup(&reason);
    if (value)
        (*value)++;
}

static __always_inline u32 active_slot(void) {
    u32 zero = 0;
    u32 *slot = net_config.lookup(&zero);
    return slot ? *slot : 0;
}

// ---------------------------------------------------------------------------
// Histogram buckets

static __always_inline u32 floor_log2(u64 value) {
    u32 log = 0;
    if (value >> 32) { value >>= 32; log += 32; }
    if (value >> 16) { value >>= 16; log += 16; }
    if (value >> 8) { value >>= 8; log += 8; }
    if (value >> 4) { value >>= 4; log += 4; }
    if (value >> 2) { value >>= 2; log += 2; }
    if (value >> 1) { log += 1; }
    return log;
}

static __always_inline u32 bucket_of(u64 ns) {
    if (ns < SUB_BUCKETS)
        return ns;
    u32 exponent = floor_log2(ns);
    if (exponent >= MAX_EXPONENT)
        return OVERFLOW_BUCKET;
    u32 sub = (ns >> (exponent - SUB_BUCKET_BITS)) & (SUB_BUCKETS - 1);
    return (exponent - SUB_BUCKET_BITS + 1) * SUB_BUCKETS + sub;
}

static __always_inline void add_to_bucket(struct histogram *h, u64 ns) {
    u32 bucket = bucket_of(ns);
    if (bucket >= BUCKET_COUNT) // cannot happen; tells the verifier the bound
        bucket = OVERFLOW_BUCKET;
    __sync_fetch_and_add(&h->buckets[bucket], 1);
    __sync_fetch_and_add(&h->sum_ns, ns);
    if (ns > h->max_ns)
        h->max_ns = ns;
}

// ---------------------------------------------------------------------------
// Socket descriptor bitmaps

// The index of `fd`'s word in a table. The empty asm keeps the compiler from
// dropping the mask after a range check the verifier cannot see through.
static __always_inline u32 table_index(u32 fd) {
    u32 index = fd >> 6;
    asm volatile("" : "+r"(index));
    return index & (TABLE_WORDS - 1);
}

static __always_inline u32 new_table_id(void) {
    return bpf_get_prandom_u32() | 1; // never 0: a zeroed high word matches no table
}

// Creates the process's table on its first socket.
static __always_inline struct fd_table *table_of(u32 pid, int create) {
    struct fd_table *table = fd_tables.lookup(&pid);
    if (table || !create)
        return table;
    u32 zero = 0;
    struct fd_table *empty = zero_table.lookup(&zero);
    if (!empty)
        return 0;
    int created = fd_tables.insert(&pid, empty) == 0;
    table = fd_tables.lookup(&pid);
    if (!table)
        net_drop(NET_DROP_FD_MAP);
    else if (created)
        table->id = new_table_id();
    return table;
}

static __always_inline int is_socket(u32 pid, u32 fd) {
    struct fd_table *table = fd_tables.lookup(&pid);
    if (!table)
        return 0;
    if (fd < TABLE_FDS)
        return (table->sockets[table_index(fd)] >> (fd & 63)) & 1;
    struct fd_key key = {.pid = pid, .word = fd >> 6};
    struct high_word *word = fd_high.lookup(&key);
    return word && word->id == table->id && (word->sockets >> (fd & 63)) & 1;
}

static __always_inline void set_high_fd(struct fd_table *table, u32 pid, u32 fd, int socket) {
    struct fd_key key = {.pid = pid, .word = fd >> 6};
    u64 bit = 1ULL << (fd & 63);
    struct high_word *word = fd_high.lookup(&key);
    if (!word || word->id != table->id) {
        if (!socket)
            return;
        struct high_word fresh = {.id = table->id, .sockets = bit};
        if (fd_high.update(&key, &fresh) != 0)
            net_drop(NET_DROP_FD_MAP);
        return;
    }
    if (socket)
        __sync_fetch_and_or(&word->sockets, bit);
    else
        __sync_fetch_and_and(&word->sockets, ~bit);
}

// Marks `fd` of `pid` as a socket (or as not one), with its close-on-exec flag.
static __always_inline void set_fd(u32 pid, u32 fd, int socket, int cloexec) {
    struct fd_table *table = table_of(pid, socket);
    if (!table)
        return;
    if (fd >= TABLE_FDS) {
        set_high_fd(table, pid, fd, socket);
        return;
    }
    u32 index = table_index(fd);
    u64 bit = 1ULL << (fd & 63);
    if (socket)
        __sync_fetch_and_or(&table->sockets[index], bit);
    else
        __sync_fetch_and_and(&table->sockets[index], ~bit);
    if (socket && cloexec)
        __sync_fetch_and_or(&table->cloexec[index], bit);
    else
        __sync_fetch_and_and(&table->cloexec[index], ~bit);
}

// The bits of word `i` (descriptors 64 * i .. 64 * i + 63) within [first, last].
static __always_inline u64 word_mask(u32 i, u64 first, u64 last) {
    u64 low = (u64)i * 64, high = low + 63;
    if (last < low || first > high || last < first)
        return 0;
    u64 mask = ~0ULL;
    if (first > low)
        mask <<= first - low;
    if (last < high)
        mask &= ~0ULL >> (high - last);
    return mask;
}

static __always_inline void forget_fd(u32 pid, u32 fd) {
    if (is_socket(pid, fd))
        set_fd(pid, fd, 0, 0);
}

// ---------------------------------------------------------------------------
// Recording

// The two histogram maps, each double-buffered. BCC cannot pass maps around as
// pointers, so the map is chosen inside these accessors.
enum histogram_map { LATENCY_MAP, CONNECTION_MAP };

static __always_inline struct histogram *histogram_lookup(u32 map, u32 slot, void *key) {
    if (map == LATENCY_MAP)
        return slot ? latency_1.lookup(key) : latency_0.lookup(key);
    return slot ? connections_1.lookup(key) : connections_0.lookup(key);
}

static __always_inline void histogram_insert(u32 map, u32 slot, void *key,
                                             struct histogram *empty) {
    if (map == LATENCY_MAP) {
        if (slot)
            latency_1.insert(key, empty);
        else
            latency_0.insert(key, empty);
    } else if (slot) {
        connections_1.insert(key, empty);
    } else {
        connections_0.insert(key, empty);
    }
}

// The histogram of `key` in the active slot of `map`, created empty if new.
static __always_inline struct histogram *histogram_entry(u32 map, u32 slot, void *key) {
    struct histogram *h = histogram_lookup(map, slot, key);
    if (h)
        return h;
    u32 zero = 0;
    struct histogram *empty = zero_histogram.lookup(&zero);
    if (!empty)
        return 0;
    histogram_insert(map, slot, key, empty);
    // Another CPU may have inserted it in between: look it up either way.
    h = histogram_lookup(map, slot, key);
    if (!h)
        net_drop(map == LATENCY_MAP ? NET_DROP_LATENCY_MAP : NET_DROP_CONNECTION_MAP);
    return h;
}

static __always_inline void record_latency(u32 slot, u32 pid, u32 generation, u32 kind,
                                           u64 ns, s64 ret) {
    struct latency_key key = {.pid = pid, .generation = generation, .kind = kind};
    struct histogram *h = histogram_entry(LATENCY_MAP, slot, &key);
    if (!h)
        return;
    // Non-blocking calls that would block are not slow calls: counted apart.
    if (ret == -E_AGAIN || (kind == CALL_CONNECT && ret == -E_INPROGRESS)) {
        __sync_fetch_and_add(&h->eagain, 1);
        return;
    }
    __sync_fetch_and_add(&h->count, 1);
    if (ret < 0)
        __sync_fetch_and_add(&h->errors, 1);
    add_to_bucket(h, ns);
}

static __always_inline void record_connection(u32 pid, u32 generation, u16 family, u16 port,
                                              const u8 *addr, u32 result, u64 ns) {
    struct connection_key key = {
        .pid = pid, .generation = generation, .family = family, .port = port, .result = result};
    __builtin_memcpy(key.addr, addr, sizeof(key.addr));
    struct histogram *h = histogram_entry(CONNECTION_MAP, active_slot(), &key);
    if (!h)
        return;
    __sync_fetch_and_add(&h->count, 1);
    add_to_bucket(h, ns);
}

static __always_inline void add_wait(u32 slot, struct wait_key *key, u64 ns) {
    u64 *value = slot ? waits_1.lookup(key) : waits_0.lookup(key);
    if (value) {
        __sync_fetch_and_add(value, ns);
        return;
    }
    if ((slot ? waits_1.insert(key, &ns) : waits_0.insert(key, &ns)) == 0)
        return;
    value = slot ? waits_1.lookup(key) : waits_0.lookup(key);
    if (value)
        __sync_fetch_and_add(value, ns);
    else
        net_drop(NET_DROP_WAIT_MAP);
}

// The user stack at the exit tracepoint is the one at entry: the kernel walks
// the user registers saved when the call entered.
static __always_inline void record_wait(void *ctx, u32 slot, u32 pid, u32 generation, u64 ns) {
    u64 weight = ns;
    if (ns < STACK_MIN_NS) {
        if (bpf_get_prandom_u32() % STACK_MIN_NS >= ns)
            return;
        weight = STACK_MIN_NS;
    }
    struct wait_key key = {.pid = pid, .generation = generation};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    if (slot)
        key.user_stack_id = wait_stacks_1.get_stackid(ctx, BPF_F_USER_STACK);
    else
        key.user_stack_id = wait_stacks_0.get_stackid(ctx, BPF_F_USER_STACK);
    if (key.user_stack_id < 0 && key.user_stack_id != -EFAULT)
        net_drop(NET_DROP_USER_STACK);
    add_wait(slot, &key, weight);
}

// ---------------------------------------------------------------------------
// Entry and exit of the measured calls

// A thread's entry stays in the in-flight map between its calls (marked
// CALL_NONE) and is rewritten in place: a hash update and delete per call cost
// more than a lookup. It also keeps the process generation, looked up once per
// thread rather than per call. Thread exit and exec delete it.
static __always_inline struct call *thread_entry(u64 id) {
    struct call *entry = inflight.lookup(&id);
    if (entry)
        return entry;
    struct call fresh = {.kind = CALL_NONE};
    fresh.generation = generation_of(id >> 32);
    if (inflight.update(&id, &fresh) != 0) {
        net_drop(NET_DROP_INFLIGHT);
        return 0;
    }
    return inflight.lookup(&id);
}

static __always_inline int enter(u32 kind, u32 fd, u64 aux) {
    struct call *entry = thread_entry(bpf_get_current_pid_tgid());
    if (!entry)
        return 0;
    entry->aux = aux;
    entry->fd = fd;
    entry->kind = kind;
    entry->family = 0;
    entry->start_ns = bpf_ktime_get_ns();
    return 0;
}

static __always_inline int enter_if_socket(u32 kind, u32 fd) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!is_socket(pid, fd))
        return 0;
    return enter(kind, fd, 0);
}

// Takes the thread's call of `kind` out of the in-flight map.
static __always_inline int take_call(u32 kind, struct call *call) {
    u64 id = bpf_get_current_pid_tgid();
    struct call *found = inflight.lookup(&id);
    if (!found)
        return 0;
    __builtin_memcpy(call, found, sizeof(*call));
    found->kind = CALL_NONE;
    return call->kind == kind;
}

// A socket-only call that did not fail for a bad or non-socket descriptor
// proves the descriptor is a socket.
static __always_inline void learn_socket(u32 pid, u32 fd, s64 ret) {
    if (ret == -E_NOTSOCK || ret == -E_BADF)
        return;
    if (!is_socket(pid, fd))
        set_fd(pid, fd, 1, 0);
}

// Takes the thread's call of `kind` into `call` and records its latency and wait;
// 0 if the thread was in no such call.
static __always_inline int measure_exit(void *ctx, u32 kind, s64 ret, struct call *call) {
    if (!take_call(kind, call))
        return 0;
    u64 ns = bpf_ktime_get_ns() - call->start_ns;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    u32 slot = active_slot();
    record_latency(slot, pid, call->generation, kind, ns, ret);
    if (ret != -E_AGAIN)
        record_wait(ctx, slot, pid, call->generation, ns);
    return 1;
}

static __always_inline int exit_measured(void *ctx, u32 kind, s64 ret, int socket_only) {
    struct call call;
    if (measure_exit(ctx, kind, ret, &call) && socket_only)
        learn_socket(bpf_get_current_pid_tgid() >> 32, call.fd, ret);
    return 0;
}

#define SIMPLE_CALL(name, KIND)                                                                \
    int enter_##name(struct syscall_enter *args) { return enter(KIND, args->args[0], 0); }   \
    int exit_##name(struct syscall_exit *args) {                                             \
        return exit_measured(args, KIND, args->ret, 1);                                      \
    }

#define SOCKET_FD_CALL(name, KIND)                                                             \
    int enter_##name(struct syscall_enter *args) {                                           \
        return enter_if_socket(KIND, args->args[0]);                                         \
    }                                                                                          \
    int exit_##name(struct syscall_exit *args) {                                             \
        return exit_measured(args, KIND, args->ret, 0);                                      \
    }

SIMPLE_CALL(sendto, CALL_SENDTO)
SIMPLE_CALL(recvfrom, CALL_RECVFROM)
SIMPLE_CALL(sendmsg, CALL_SENDMSG)
SIMPLE_CALL(recvmsg, CALL_RECVMSG)
SIMPLE_CALL(sendmmsg, CALL_SENDMMSG)
SIMPLE_CALL(recvmmsg, CALL_RECVMMSG)
SOCKET_FD_CALL(read, CALL_READ)
SOCKET_FD_CALL(write, CALL_WRITE)
SOCKET_FD_CALL(readv, CALL_READV)
SOCKET_FD_CALL(writev, CALL_WRITEV)

// accept and accept4 return a new socket.
static __always_inline int exit_accept_call(void *ctx, u32 kind, s64 ret) {
    struct call call;
    if (!measure_exit(ctx, kind, ret, &call))
        return 0;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (ret >= 0)
        set_fd(pid, ret, 1, call.aux & SOCK_CLOEXEC);
    learn_socket(pid, call.fd, ret);
    return 0;
}

int enter_accept(struct syscall_enter *args) { return enter(CALL_ACCEPT, args->args[0], 0); }
int exit_accept(struct syscall_exit *args) { return exit_accept_call(args, CALL_ACCEPT, args->ret); }
int enter_accept4(struct syscall_enter *args) {
    return enter(CALL_ACCEPT4, args->args[0], args->args[3]);
}
int exit_accept4(struct syscall_exit *args) {
    return exit_accept_call(args, CALL_ACCEPT4, args->ret);
}

// ---------------------------------------------------------------------------
// connect(): destination, outcome, and non-blocking connects to completion
//
// A non-blocking connect returns EINPROGRESS; event loops then wait for the
// socket to be writable and ask getsockopt(SO_ERROR) for the outcome (Go,
// libuv, Python asyncio, tokio, curl, nginx do), or call connect() again
// (EISCONN: connected; EALREADY: still going). The outcome is counted then,
// with the time from the first connect() call, which includes the event
// loop's delay in asking. A socket closed first is counted as EINPROGRESS,
// with the duration of the connect() call itself.

int enter_connect(struct syscall_enter *args) {
    struct call *entry = thread_entry(bpf_get_current_pid_tgid());
    if (!entry)
        return 0;
    struct call call = {.kind = CALL_CONNECT, .fd = args->args[0]};
    call.generation = entry->generation;
    const void *address = (const void *)args->args[1];
    u16 family = 0;
    bpf_probe_read_user(&family, sizeof(family), address);
    // struct sockaddr_in: family, port (network order), 4 address bytes;
    // struct sockaddr_in6: family, port, flowinfo, 16 address bytes.
    u16 port = 0;
    if (family == AF_INET && args->args[2] >= 8) {
        bpf_probe_read_user(&port, sizeof(port), address + 2);
        if (bpf_probe_read_user(call.addr, 4, address + 4) == 0)
            call.family = AF_INET;
    } else if (family == AF_INET6 && args->args[2] >= 24) {
        bpf_probe_read_user(&port, sizeof(port), address + 2);
        if (bpf_probe_read_user(call.addr, 16, address + 8) == 0)
            call.family = AF_INET6;
    }
    call.port = (port >> 8) | ((port & 0xff) << 8);
    call.start_ns = bpf_ktime_get_ns();
    __builtin_memcpy(entry, &call, sizeof(call));
    return 0;
}

// Counts the outcome of a connect that returned EINPROGRESS earlier; 0 if none is pending.
static __always_inline int complete_pending(u32 pid, u32 fd, u32 result) {
    struct socket_key key = {.pid = pid, .fd = fd};
    struct pending_connect *found = pending.lookup(&key);
    if (!found)
        return 0;
    struct pending_connect connect;
    __builtin_memcpy(&connect, found, sizeof(connect));
    pending.delete(&key);
    u64 ns = result == E_INPROGRESS ? connect.call_ns : bpf_ktime_get_ns() - connect.start_ns;
    record_connection(pid, connect.generation, connect.family, connect.port, connect.addr,
                      result, ns);
    return 1;
}

int exit_connect(struct syscall_exit *args) {
    struct call call;
    if (!take_call(CALL_CONNECT, &call))
        return 0;
    s64 ret = args->ret;
    u64 ns = bpf_ktime_get_ns() - call.start_ns;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    u32 generation = call.generation;
    u32 slot = active_slot();
    record_latency(slot, pid, generation, CALL_CONNECT, ns, ret);
    if (ret != -E_INPROGRESS && ret != -E_AGAIN)
        record_wait(args, slot, pid, generation, ns);
    learn_socket(pid, call.fd, ret);
    if (ret == -E_ALREADY)
        return 0; // an earlier non-blocking connect is still going
    if (ret == -E_ISCONN) {
        complete_pending(pid, call.fd, 0);
        return 0;
    }
    if (complete_pending(pid, call.fd, ret < 0 ? -ret : 0))
        return 0; // a second connect() gave the outcome of the first
    if (call.family == 0)
        return 0; // not an IP destination (unix socket, AF_UNSPEC, unreadable)
    if (ret == -E_INPROGRESS) {
        struct socket_key key = {.pid = pid, .fd = call.fd};
        struct pending_connect connect = {
            .start_ns = call.start_ns,
            .call_ns = ns,
            .generation = generation,
            .family = call.family,
            .port = call.port,
        };
        __builtin_memcpy(connect.addr, call.addr, sizeof(connect.addr));
        pending.update(&key, &connect);
        return 0;
    }
    record_connection(pid, generation, call.family, call.port, call.addr, ret < 0 ? -ret : 0, ns);
    return 0;
}

int enter_getsockopt(struct syscall_enter *args) {
    if (args->args[1] != SOL_SOCKET || args->args[2] != SO_ERROR)
        return 0;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct socket_key key = {.pid = pid, .fd = args->args[0]};
    if (!pending.lookup(&key))
        return 0;
    return enter(CALL_GETSOCKOPT, args->args[0], args->args[3]);
}

int exit_getsockopt(struct syscall_exit *args) {
    struct call call;
    if (!take_call(CALL_GETSOCKOPT, &call) || args->ret != 0)
        return 0;
    int error = 0;
    if (bpf_probe_read_user(&error, sizeof(error), (const void *)call.aux) != 0 || error < 0)
        return 0;
    // SO_ERROR is 0 both when connected and while still connecting; event
    // loops ask once the socket is writable, when 0 means connected.
    complete_pending(bpf_get_current_pid_tgid() >> 32, call.fd, error);
    return 0;
}

// ---------------------------------------------------------------------------
// Descriptor bookkeeping

int enter_socket(struct syscall_enter *args) { return enter(CALL_SOCKET, 0, args->args[1]); }

int exit_socket(struct syscall_exit *args) {
    struct call call;
    if (!take_call(CALL_SOCKET, &call) || args->ret < 0)
        return 0;
    set_fd(bpf_get_current_pid_tgid() >> 32, args->ret, 1, call.aux & SOCK_CLOEXEC);
    return 0;
}

int enter_socketpair(struct syscall_enter *args) {
    u64 cloexec = args->args[1] & SOCK_CLOEXEC;
    return enter(CALL_SOCKETPAIR, cloexec != 0, args->args[3]);
}

int exit_socketpair(struct syscall_exit *args) {
    struct call call;
    if (!take_call(CALL_SOCKETPAIR, &call) || args->ret != 0)
        return 0;
    int fds[2] = {};
    if (bpf_probe_read_user(fds, sizeof(fds), (const void *)call.aux) != 0)
        return 0;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (fds[0] >= 0)
        set_fd(pid, fds[0], 1, call.fd);
    if (fds[1] >= 0)
        set_fd(pid, fds[1], 1, call.fd);
    return 0;
}

int enter_close(struct syscall_enter *args) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    u32 fd = args->args[0];
    forget_fd(pid, fd);
    complete_pending(pid, fd, E_INPROGRESS);
    return 0;
}

// Descriptors from TABLE_FDS on are left as they are (see the high words).
int enter_close_range(struct syscall_enter *args) {
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct fd_table *table = fd_tables.lookup(&pid);
    if (!table)
        return 0;
    int cloexec_only = (args->args[2] & CLOSE_RANGE_CLOEXEC) != 0;
    for (u32 i = 0; i < TABLE_WORDS; i++) {
        // Read the bounds afresh in every round: comparing the counter with a
        // value kept across rounds makes the verifier track every round apart.
        u64 first = *(volatile u64 *)&args->args[0];
        u64 last = *(volatile u64 *)&args->args[1];
        u64 mask = word_mask(i, first, last);
        if (cloexec_only)
            table->cloexec[i] |= mask & table->sockets[i];
        else
            table->sockets[i] &= ~mask;
        table->cloexec[i] &= ~(cloexec_only ? 0 : mask);
    }
    return 0;
}

// dup(old), dup2(old, new), dup3(old, new, flags), fcntl(old, F_DUPFD*, min):
// the new descriptor is a socket exactly when the old one is (dup2 and dup3
// close what `new` was before).
int enter_dup(struct syscall_enter *args) { return enter(CALL_DUP, args->args[0], 0); }
int enter_dup2(struct syscall_enter *args) { return enter(CALL_DUP, args->args[0], 0); }
int enter_dup3(struct syscall_enter *args) {
    return enter(CALL_DUP, args->args[0], (args->args[2] & O_CLOEXEC) != 0);
}

int enter_fcntl(struct syscall_enter *args) {
    u32 fd = args->args[0];
    u64 command = args->args[1];
    if (command == F_DUPFD || command == F_DUPFD_CLOEXEC)
        return enter(CALL_DUP, fd, command == F_DUPFD_CLOEXEC);
    if (command == F_SETFD) {
        u32 pid = bpf_get_current_pid_tgid() >> 32;
        if (is_socket(pid, fd))
            set_fd(pid, fd, 1, args->args[2] & FD_CLOEXEC);
    }
    return 0;
}

static __always_inline int exit_dup_call(s64 ret) {
    struct call call;
    if (!take_call(CALL_DUP, &call) || ret < 0)
        return 0;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if ((u32)ret != call.fd)
        set_fd(pid, ret, is_socket(pid, call.fd), call.aux);
    return 0;
}

int exit_dup(struct syscall_exit *args) { return exit_dup_call(args->ret); }
int exit_dup2(struct syscall_exit *args) { return exit_dup_call(args->ret); }
int exit_dup3(struct syscall_exit *args) { return exit_dup_call(args->ret); }
int exit_fcntl(struct syscall_exit *args) { return exit_dup_call(args->ret); }

// task:task_newtask runs in the parent while it creates a task. A child that
// does not share the parent's descriptor table starts with a copy of it
// (descriptors below TABLE_FDS; the copy gets its own id, so the parent's
// higher descriptors are not inherited).
int on_newtask(void *ctx) {
    u64 flags = *(u64 *)((char *)ctx + NEWTASK_FLAGS_OFFSET);
    u32 child = *(s32 *)((char *)ctx + NEWTASK_PID_OFFSET);
    if (flags & CLONE_THREAD)
        return 0;
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (flags & CLONE_FILES)
        return 0;
    struct fd_table *table = fd_tables.lookup(&parent);
    if (!table)
        return 0;
    if (fd_tables.update(&child, table) != 0) {
        net_drop(NET_DROP_FD_MAP);
        return 0;
    }
    table = fd_tables.lookup(&child);
    if (table)
        table->id = new_table_id();
    return 0;
}

// exec closes the close-on-exec descriptors and starts a new image. (The new
// id also forgets descriptors from TABLE_FDS on, close-on-exec or not.)
int on_exec(void *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
    inflight.delete(&id); // its next call takes the new image's generation
    struct fd_table *table = fd_tables.lookup(&pid);
    if (!table)
        return 0;
    for (u32 i = 0; i < TABLE_WORDS; i++) {
        table->sockets[i] &= ~table->cloexec[i];
        table->cloexec[i] = 0;
    }
    table->id = new_table_id();
    return 0;
}

int on_exit(void *ctx) {
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
    inflight.delete(&id);
    if (pid != (u32)id)
        return 0; // another thread: the process lives on
    fd_tables.delete(&pid); // its high words no longer match any table
    return 0;
}

#if BUCKET_SELFTEST
// Test only: on getppid() by the process selftest.pid, writes
// bucket_of(selftest.input[i]) into selftest.out[i].
#define SELFTEST_VALUES 512
struct selftest {
    u32 pid;
    u32 pad;
    u64 input[SELFTEST_VALUES];
    u32 out[SELFTEST_VALUES];
};
BPF_ARRAY(selftest, struct selftest, 1);

int bucket_selftest(void *ctx) {
    u32 zero = 0;
    struct selftest *test = selftest.lookup(&zero);
    if (!test || test->pid != bpf_get_current_pid_tgid() >> 32)
        return 0;
    for (u32 i = 0; i < SELFTEST_VALUES; i++)
        test->out[i] = bucket_of(test->input[i]);
    return 0;
}
#endif
