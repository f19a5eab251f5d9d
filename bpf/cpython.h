// Python frames of CPython processes (3.6-3.13), read from the interpreter's own state.
//
// The agent finds a process's interpreter and its struct offsets (profiler-agent/cpython/)
// and puts them in `py_procs` under the process's pid. A sample of such a process finds
// the sampled thread's PyThreadState in the interpreter's thread list (by the kernel's
// thread id: PyThreadState's own on 3.11+, before that the tid glibc keeps in the
// pthread whose address is the thread state's thread_id), then walks its frames,
// recording each frame's code object and instruction byte offset. The stack is stored
// once per content hash in py_stacks_<slot>, and the sample is counted in
// py_counts_<slot> under the native sample's key plus that hash: the drain splits each
// native count by the Python stacks it ran. Only bpf_probe_read_user; every loop bounded;
// a frame whose code object's type is not PyCode_Type ends the walk (garbage, or a frame
// being built).
//
// This header holds the walk; the maps and the functions that use them are in
// cpu_profile.bpf.c: BCC rewrites map declarations and calls in the main file only.
//
// Compile-time parameters: PY_MAX_FRAMES, PY_MAX_THREADS, PY_PROCS, PY_STACK_ENTRIES.

#ifndef PY_MAX_FRAMES
#define PY_MAX_FRAMES 48
#endif
#ifndef PY_MAX_THREADS
#define PY_MAX_THREADS 32
#endif
#ifndef PY_PROCS
#define PY_PROCS 4096
#endif
#ifndef PY_STACK_ENTRIES
#define PY_STACK_ENTRIES 8192
#endif

#define PY_NONE 0xffff // an offset the version does not have
#define PY_POSITION_LASTI_BYTES 0
#define PY_POSITION_LASTI_UNITS 1
#define PY_POSITION_POINTER 2
#define PY_OWNED_BY_CSTACK 3

// One process's interpreter: addresses, then byte offsets (profiler-agent/cpython/bpfmaps.py).
struct py_offsets {
    u64 interpreters_head; // address of the pointer to the first interpreter state
    u64 code_type;         // address of PyCode_Type
    u16 interp_threads_head;
    u16 tstate_next;
    u16 tstate_frame;
    u16 cframe_current_frame; // PY_NONE: tstate_frame is the frame itself
    u16 tstate_thread_id;
    u16 tstate_native_thread_id; // PY_NONE: the tid is read from the pthread
    u16 pthread_tid;             // where glibc keeps the tid in its struct pthread
    u16 frame_previous;
    u16 frame_code;
    u16 frame_position;
    u16 frame_owner; // PY_NONE before 3.11
    u16 code_bytes;  // where the instructions start in the code object (3.11+)
    u8 position;     // PY_POSITION_*
    u8 pad[7];
};

struct py_stack {
    u64 code[PY_MAX_FRAMES];   // code object addresses, the running frame first
    s32 offset[PY_MAX_FRAMES]; // instruction byte offsets (-1: none yet)
    u32 depth;
    u32 complete; // 0: cut by the bound, or by memory that is not a frame
};

struct py_sample_key {
    struct sample_key native;
    u64 stack; // hash of the Python stack
};

static __always_inline u64 py_pointer(u64 address) {
    u64 value = 0;
    if (bpf_probe_read_user(&value, sizeof(value), (void *)address) != 0)
        return 0;
    return value;
}

// The thread state of thread `tid`, or 0.
static __always_inline u64 py_thread_state(struct py_offsets *py, u32 tid) {
    u64 interp = py_pointer(py->interpreters_head);
    if (!interp)
        return 0;
    u64 state = py_pointer(interp + py->interp_threads_head);
    for (int i = 0; i < PY_MAX_THREADS && state; i++) {
        u32 thread_tid = 0;
        u64 at = state + py->tstate_native_thread_id;
        if (py->tstate_native_thread_id == PY_NONE) // before 3.11: the pthread's tid
            at = py_pointer(state + py->tstate_thread_id) + py->pthread_tid;
        bpf_probe_read_user(&thread_tid, sizeof(thread_tid), (void *)at);
        if (thread_tid == tid)
            return state;
        state = py_pointer(state + py->tstate_next);
    }
    return 0;
}

static __always_inline s32 py_position(struct py_offsets *py, u64 frame, u64 code) {
    if (py->position == PY_POSITION_POINTER) {
        u64 instruction = py_pointer(frame + py->frame_position);
        u64 start = code + py->code_bytes;
        return instruction >= start && instruction - start < 0x7fffffff ? instruction - start : -1;
    }
    s32 lasti = -1;
    bpf_probe_read_user(&lasti, sizeof(lasti), (void *)(frame + py->frame_position));
    if (lasti < 0)
        return -1;
    return py->position == PY_POSITION_LASTI_UNITS ? lasti * 2 : lasti;
}

// Walks the frames from `frame` into `stack`; returns the content hash (FNV-1a of the words).
// Frame i goes to slot i (a C-stack shim frame as code 0, dropped by the agent): a
// separate depth counter would give the verifier one path per combination of skipped
// frames.
static __always_inline u64 py_walk(struct py_offsets *py, u64 frame, struct py_stack *stack) {
    u64 hash = 0xcbf29ce484222325ULL;
    u32 depth = PY_MAX_FRAMES;
    stack->complete = 0;
    for (int i = 0; i < PY_MAX_FRAMES; i++) {
        if (!frame) {
            stack->complete = 1;
            depth = i;
            break;
        }
        u8 owner = 0;
        if (py->frame_owner != PY_NONE)
            bpf_probe_read_user(&owner, sizeof(owner), (void *)(frame + py->frame_owner));
        u64 code = 0;
        s32 offset = -1;
        if (owner != PY_OWNED_BY_CSTACK) {
            code = py_pointer(frame + py->frame_code);
            if (!code || py_pointer(code + 8) != py->code_type) {
                depth = i; // not a code object: garbage, or a frame being built
                break;
            }
            offset = py_position(py, frame, code);
        }
        stack->code[i] = code;
        stack->offset[i] = offset;
        hash = (hash ^ code) * 0x100000001b3ULL;
        hash = (hash ^ (u32)offset) * 0x100000001b3ULL;
        frame = py_pointer(frame + py->frame_previous);
    }
    stack->depth = depth;
    return hash ^ depth;
}
