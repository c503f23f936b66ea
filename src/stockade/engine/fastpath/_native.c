/* One fast-path run in a single C call: the same wasmtime C API calls as `_run.py`'s
 * `execute`, minus a ctypes transition per call (about 15 of them per run), with the
 * slot's shared state reset here too (`start_state`); and the fast path's own standard
 * streams (`fd_write`, `fd_read`, `fd_close`, `fd_sync`, `fd_datasync`) and `random_get`,
 * host functions that count toward the run's host-call budget and stop output at its cap as they write.
 * With them, WASI's own stdio is left empty: no file is opened per run.
 *
 * Every structure shared with Python is checked field by field (offsets and sizes) at
 * `stockade_fast_init`; a caller built for another layout is refused and runs the
 * Python version.
 *
 * Built by `scripts/build_native.py` into `libstockade_fastrun.so` beside this file; without it
 * the fast path runs the Python version. It links against nothing: the wasmtime
 * functions are handed over by address (`stockade_fast_init`), from the library
 * wasmtime-py loaded, and the layouts it cannot know (instance and extern handles)
 * are opaque buffers with offsets measured by ctypes. Pinned, like `_capi.py`, to
 * the wasmtime 50 C API.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

typedef struct { size_t size; uint8_t *data; } byte_vec;

enum {
    F_STORE_NEW, F_STORE_CONTEXT, F_STORE_LIMITER, F_STORE_DELETE, F_SET_FUEL, F_GET_FUEL,
    F_SET_EPOCH_DEADLINE, F_SET_WASI, F_WASI_NEW, F_WASI_DELETE, F_WASI_ARGV, F_WASI_ENV,
    F_WASI_STDIN_BYTES, F_WASI_STDOUT_FILE, F_WASI_STDERR_FILE, F_BYTE_VEC_NEW,
    F_PRE_INSTANTIATE, F_EXPORT_GET, F_FUNC_CALL, F_MEMORY_DATA_SIZE, F_ERROR_DELETE,
    F_CALLER_CONTEXT, F_CONTEXT_GET_DATA, F_CALLER_EXPORT_GET, F_MEMORY_DATA, F_TRAP_NEW,
    F_ERROR_NEW, F_INCREMENT_EPOCH, F_EPOCH_CALLBACK, F_GLOBAL_GET, F_COUNT
};

static void *fn[F_COUNT];
static size_t extern_of; /* offset of the union in wasmtime_extern_t */

#define CALL(index, type) ((type)fn[index])

/* Outcome of the steps before the guest runs (status): the error, if any, is in `error`. */
enum { RUN_OK = 0, RUN_FUEL = 1, RUN_WASI_FILES = 2, RUN_WASI = 3, RUN_NO_START = 4,
       RUN_TOO_MANY = 5, RUN_BAD_STRINGS = 6, RUN_NO_TRIPWIRE = 7, RUN_NO_DEADLINE = 8 };

/* A run's deadline on the deadline thread's list (see "deadlines" below): at
 * `deadline_ns` it fires a tripwire or moves an engine's epoch (`kind`, `target`). All
 * fields belong to `due_lock`. */
typedef struct due_entry due_entry;
struct due_entry {
    int64_t deadline_ns; /* CLOCK_MONOTONIC */
    due_entry *next, *prev;
    void *target;        /* the trip_state, or the engine */
    int32_t kind, listed;
};
enum { DUE_TRIP = 1, DUE_EPOCH = 2 };

/* What a plan fixes for all its runs (`_run.py`'s `RunPlan.native`), built once. */
typedef struct {
    void *pre;
    int64_t max_memory;
    uint64_t fuel;
    int32_t has_fuel, capture_stderr;
    const char *argv; /* NUL-terminated entries, back to back */
    size_t argc, argv_len; /* entries; bytes, terminators included */
    int64_t max_output;      /* -1: unlimited */
    uint64_t max_hostcalls;  /* UINT64_MAX: unlimited */
    int32_t owned_stdio;     /* the linker serves fd_write/fd_read/fd_close from here */
    int32_t tripwire;        /* the module is rewritten with a tripwire (engine.tripwire) */
    /* The store's limits besides memory (-1: none): the pool's slots may be larger. */
    int64_t max_table_elements, max_instances, max_tables, max_memories;
} run_plan;

/* What the owned standard streams of one run share with Python (`_native.py`'s
 * `RunState`); a run's store data points at its slot's. */
typedef struct run_state run_state;
typedef struct trip_state trip_state;
struct epoch_watch;
#define INLINE_OUTPUT 8192
struct run_state {
    int32_t out_fd, err_fd, capture_err, stop;
    int64_t cap;                 /* stdout + stderr bytes (-1: unlimited) */
    int64_t out_size, err_size;  /* bytes written this run */
    uint64_t hostcalls, max_hostcalls;
    const uint8_t *stdin_data;
    uint64_t stdin_len, stdin_pos;
    int32_t closed[3];           /* fd_close'd standard descriptors */
    uint64_t calls[11];          /* served calls by CALL_* (usage.hostcalls) */
    uint8_t *memory_base;        /* the guest's `memory` once instantiated, else NULL */
    trip_state *trip;            /* the slot's tripwire (NULL without one) */
    struct epoch_watch *watch;   /* an epochs run's deadline (NULL: none, or a tripwire) */
    /* A stream's first INLINE_OUTPUT bytes stay here, no system call per write or read;
     * once it outgrows them they are moved to its file, which then holds it all
     * (`spilled`, set after the move: a reader on another thread sees either whole). */
    int32_t out_spilled, err_spilled;
    uint8_t out_inline[INLINE_OUTPUT], err_inline[INLINE_OUTPUT];
};

/* -- the tripwire ---------------------------------------------------------------------
 * One run's deadline page (`engine/tripwire.py`): `fire` (any thread, at the deadline)
 * revokes it once the run has `arm`ed it; `disarm` (the run's thread, before its store
 * and the page go) gives it back. One lock orders the three, so a page is never revoked
 * after it was given back: the pool may by then have handed its slot to another run,
 * whose memory the host writes. The sandbox's runs (wasmtime-py) use the same functions
 * through ctypes. */
struct trip_state {
    atomic_int lock;
    int32_t fired, revoked, reserved; /* fired: also read without the lock (atomically) */
    uint8_t *page;
    due_entry due; /* its run's deadline */
};

static void trip_lock(trip_state *t) {
    while (atomic_exchange_explicit(&t->lock, 1, memory_order_acquire))
        sched_yield(); /* held for one mprotect at most */
}

static void trip_unlock(trip_state *t) {
    atomic_store_explicit(&t->lock, 0, memory_order_release);
}

/* mprotect of a page this process mapped fails only when the kernel refuses memory to
 * split the mapping: a guest that cannot be stopped, or a page the pool would fault on,
 * ends the process instead of running past every limit. */
static void trip_protect(uint8_t *page, int protection) {
    if (mprotect(page, (size_t)sysconf(_SC_PAGESIZE), protection) != 0) {
        fputs("stockade: cannot change the tripwire page's protection; aborting\n", stderr);
        abort();
    }
}

size_t stockade_trip_size(void) { return sizeof(trip_state); }

void stockade_trip_fire(trip_state *t) {
    trip_lock(t);
    __atomic_store_n(&t->fired, 1, __ATOMIC_RELAXED);
    if (t->page && !t->revoked) {
        trip_protect(t->page, PROT_NONE);
        t->revoked = 1;
    }
    trip_unlock(t);
}

/* The run's page exists: a deadline already past revokes it now, before the guest's
 * first instruction. The new page is not revoked, whatever the last run left: one whose
 * `disarm` an interrupt skipped left `revoked` set, and `fire` would then skip this one. */
void stockade_trip_arm(trip_state *t, uint8_t *page) {
    trip_lock(t);
    t->page = page;
    t->revoked = 0;
    if (t->fired && !t->revoked) {
        trip_protect(page, PROT_NONE);
        t->revoked = 1;
    }
    trip_unlock(t);
}

void stockade_trip_disarm(trip_state *t) {
    trip_lock(t);
    if (t->revoked) trip_protect(t->page, PROT_READ | PROT_WRITE);
    t->revoked = 0;
    t->page = NULL;
    trip_unlock(t);
}

static uint64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* -- deadlines ---------------------------------------------------------------------------
 * One thread per process stops the runs past their deadline: it fires a run's tripwire,
 * or moves its engine's epoch, which the run's epoch callback (`stockade_epoch_deadline`)
 * then judges by the clock. A run lists its deadline before its guest can run and takes
 * it off before its store goes; the thread sleeps until the earliest deadline listed and
 * acts under the list's lock, so a deadline taken off is never acted on afterwards. In
 * C, not in Python's epoch ticker: a run's deadline costs it no Python and no lock the
 * interpreter sees. The list is as long as the runs in flight.
 *
 * Waking the thread costs a signal and two context switches, which a run far shorter than
 * the thread's wake-up (a gateway's hello) paid each time: the thread woke to an emptied
 * list, slept without a time, and the next run had to wake it again. So an emptied list
 * still keeps the thread's timed sleep, as long as the shortest run time given since its
 * last wake-up (`due_span`): a run listed in that time, with that time or a longer one,
 * is due after the thread wakes by itself and needs no signal. Only a wake-up with no
 * run listed since the last sleeps without a time. */
static pthread_mutex_t due_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t due_cond;
static bool due_cond_ready, due_running; /* the thread exists in this process */
static due_entry *due_first;             /* listed deadlines, unordered */
static int64_t due_wake = INT64_MAX;     /* when the thread wakes by itself next */
static int64_t due_span = INT64_MAX;     /* the shortest deadline - listing time since */
#define DUE_SHORTEST_SLEEP 1000000       /* ns: an emptied list never keeps it spinning */

static void due_remove(due_entry *e) {
    if (e->prev) e->prev->next = e->next;
    else due_first = e->next;
    if (e->next) e->next->prev = e->prev;
    e->next = e->prev = NULL;
    e->listed = 0;
}

static void *due_loop(void *unused) {
    (void)unused;
    pthread_mutex_lock(&due_lock);
    for (;;) {
        int64_t now = (int64_t)now_ns(CLOCK_MONOTONIC), next = INT64_MAX;
        for (due_entry *e = due_first, *following; e; e = following) {
            following = e->next;
            if (e->deadline_ns <= now) {
                due_remove(e);
                if (e->kind == DUE_TRIP) stockade_trip_fire(e->target);
                else CALL(F_INCREMENT_EPOCH, void (*)(void *))(e->target);
            } else if (e->deadline_ns < next) {
                next = e->deadline_ns;
            }
        }
        if (next == INT64_MAX && due_span != INT64_MAX) { /* runs come and go: see above */
            int64_t linger = due_span > DUE_SHORTEST_SLEEP ? due_span : DUE_SHORTEST_SLEEP;
            next = linger < INT64_MAX - now ? now + linger : INT64_MAX; /* no overflow */
        }
        due_span = INT64_MAX;
        due_wake = next;
        if (next == INT64_MAX) {
            pthread_cond_wait(&due_cond, &due_lock);
        } else {
            struct timespec at = {.tv_sec = next / 1000000000, .tv_nsec = next % 1000000000};
            pthread_cond_timedwait(&due_cond, &due_lock, &at);
        }
    }
    return NULL;
}

/* The thread, started once per process (the lock held); false when it cannot be. Signals
 * are blocked in it: they go to the interpreter's threads, as before it existed. */
static bool due_start(void) {
    if (!due_cond_ready) {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&due_cond, &attr);
        pthread_condattr_destroy(&attr);
        due_cond_ready = true;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t thread;
    int failed = pthread_create(&thread, &attr, due_loop, NULL);
    if (!failed) pthread_setname_np(thread, "stockade-due"); /* as `ps -L` shows it */
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return !failed;
}

/* A child of fork has none of its parent's threads: neither the deadline thread nor the
 * runs listed. It starts its own at its first deadline. */
static void due_before_fork(void) { pthread_mutex_lock(&due_lock); }
static void due_after_fork_parent(void) { pthread_mutex_unlock(&due_lock); }
static void due_after_fork_child(void) {
    for (due_entry *e = due_first, *following; e; e = following) {
        following = e->next; /* listed by the parent's runs: not on the child's list */
        e->next = e->prev = NULL;
        e->listed = 0;
    }
    due_running = due_cond_ready = false;
    due_first = NULL;
    due_wake = due_span = INT64_MAX;
    pthread_mutex_unlock(&due_lock);
}

/* List `e` to act on `target` at `deadline_ns` (listed again if it was). 0, or -1 when
 * the thread cannot be started (nothing is listed then). */
static int due_list(due_entry *e, int32_t kind, void *target, int64_t deadline_ns) {
    pthread_mutex_lock(&due_lock);
    if (!due_running) {
        if (!due_start()) {
            pthread_mutex_unlock(&due_lock);
            return -1;
        }
        due_running = true;
        due_wake = -1; /* planning its first sleep: no signal needed */
    }
    if (e->listed) due_remove(e);
    e->deadline_ns = deadline_ns;
    e->kind = kind;
    e->target = target;
    e->prev = NULL;
    e->next = due_first;
    if (due_first) due_first->prev = e;
    due_first = e;
    e->listed = 1;
    int64_t now = (int64_t)now_ns(CLOCK_MONOTONIC);
    int64_t span = deadline_ns > now ? deadline_ns - now : 0; /* no overflow either */
    if (span < due_span) due_span = span;
    if (deadline_ns < due_wake) { /* it would sleep past this one */
        due_wake = deadline_ns;
        pthread_cond_signal(&due_cond);
    }
    pthread_mutex_unlock(&due_lock);
    return 0;
}

/* Once this returns, the thread does not act on `e`. */
static void due_unlist(due_entry *e) {
    pthread_mutex_lock(&due_lock);
    if (e->listed) due_remove(e);
    pthread_mutex_unlock(&due_lock);
}

/* Fire `t` at `deadline_ns` (CLOCK_MONOTONIC) unless taken off before (`undue`). */
int stockade_trip_due(trip_state *t, int64_t deadline_ns) {
    return due_list(&t->due, DUE_TRIP, t, deadline_ns);
}

void stockade_trip_undue(trip_state *t) { due_unlist(&t->due); }

/* What one run is given besides its plan. */
typedef struct {
    void *engine;
    run_state *state;      /* the store's data: the slot's run_state */
    const run_plan *plan;
    uint64_t deadline;     /* the epoch deadline, in ticks */
    int64_t deadline_ns;   /* CLOCK_MONOTONIC: the run is stopped then (-1: none) */
    const char *names, *values; /* NUL-terminated entries, back to back */
    size_t envc, names_len, values_len;
    const uint8_t *stdin_data;
    size_t stdin_len;
    const char *out_path, *err_path; /* the files behind out_fd and err_fd */
    int64_t *cap;          /* the slot's cap cell, set once the output is ready */
    int32_t out_fd, err_fd;
    trip_state *trip;      /* the slot's tripwire (reset before the deadline was set) */
    struct epoch_watch *watch; /* the slot's: an epochs plan's deadline */
} run_in;

typedef struct {
    void *error, *trap;
    uint64_t memory_bytes, fuel_left;
    int32_t called, status;
    uint64_t wall_ns, cpu_ns; /* of this call, on this thread */
    int64_t out_size, err_size; /* bytes the guest wrote (-1: not read) */
    int64_t grow_refused;  /* pages the largest refused memory.grow asked for (0: none) */
} run_out;

/* `wasmtime_val_t`: a kind, then the value at offset 8 (`_capi.py`'s `Val`). */
typedef struct {
    uint8_t kind;
    union { int64_t i64; uint8_t bytes[24]; } of;
} val_t;

#define MAX_STRINGS 1024 /* argv and environment entries; more take the Python path */
/* The tripwire's exports (engine/trip.py EXPORT and START), and the refused grows'
 * global (engine/grow.py EXPORT). */
#define TRIP_EXPORT "__stockade_tripwire"
#define TRIP_START "__stockade_start"
#define GROW_EXPORT "__stockade_grow_refused"

void stockade_trip_arm(trip_state *t, uint8_t *page);
void stockade_trip_disarm(trip_state *t);

/* The deadline of a sandbox run on an epochs engine, decided by the clock when the
 * store's epoch deadline is reached (`sandbox/cancel.py`'s EpochDeadline): anyone may
 * move the shared epoch (a cancellation wakes its run so), so an epoch count alone would
 * stop a run early. In C, not a ctypes callback: a Python exception pending when one is
 * entered (Ctrl-C) makes ctypes return garbage, which wasmtime frees as an error. */
typedef struct epoch_watch {
    int64_t deadline_ns;  /* CLOCK_MONOTONIC; -1: none */
    int32_t cancelled;    /* set from another thread (CancelToken.cancel) */
    int32_t reason;       /* set here when it stops the guest: 1 timeout, 2 cancelled */
    due_entry due;        /* a fast-path run's deadline (`stockade_watch_start`) */
} epoch_watch;

enum { WATCH_TIMEOUT = 1, WATCH_CANCELLED = 2 };

/* Whether the run of `w` must stop now: cancelled, or its deadline passed (the reason
 * set). Asked by its epoch callback and between the chunks of a long owned call. */
static bool watch_ended(epoch_watch *w) {
    if (__atomic_load_n(&w->cancelled, __ATOMIC_ACQUIRE)) {
        w->reason = WATCH_CANCELLED;
        return true;
    }
    if (w->deadline_ns >= 0 && w->deadline_ns <= (int64_t)now_ns(CLOCK_MONOTONIC)) {
        w->reason = WATCH_TIMEOUT;
        return true;
    }
    return false;
}

void *stockade_epoch_deadline(void *context, void *env, uint64_t *delta, uint8_t *kind) {
    (void)context;
    epoch_watch *w = env;
    if (watch_ended(w))
        return CALL(F_ERROR_NEW, void *(*)(const char *))(
            w->reason == WATCH_CANCELLED ? "stockade: run cancelled" : "stockade: run timeout");
    /* Early: the epoch moved for another run or a cancellation. Again at its next move. */
    *delta = 1;
    *kind = 0; /* WASMTIME_UPDATE_DEADLINE_CONTINUE */
    return NULL;
}

/* A fast-path run's deadline on an epochs engine: `w` readied for the run, the store's
 * epoch callback set to judge every move of the epoch by the clock, its epoch deadline at
 * the next move, and the deadline listed to move `engine`'s epoch then (other runs'
 * deadlines move it too: the callback lets this run go on until its own). Before the
 * guest runs; `stockade_watch_stop` before the store goes. 0, or -1 when the deadline
 * thread cannot be started. */
int stockade_watch_start(void *store, void *cx, epoch_watch *w, void *engine,
                         int64_t deadline_ns) {
    w->deadline_ns = deadline_ns;
    w->cancelled = w->reason = 0;
    CALL(F_EPOCH_CALLBACK, void (*)(void *, void *(*)(void *, void *, uint64_t *, uint8_t *),
                                    void *, void (*)(void *)))(store, stockade_epoch_deadline,
                                                               w, NULL);
    CALL(F_SET_EPOCH_DEADLINE, void (*)(void *, uint64_t))(cx, 1);
    return due_list(&w->due, DUE_EPOCH, engine, deadline_ns);
}

void stockade_watch_stop(epoch_watch *w) { due_unlist(&w->due); }

/* Each structure shared with Python: its fields' offsets, then its size, in the order
 * of `_native.py`'s `LAYOUT`. Sizes alone let two fields swapped, or one moved into
 * padding, through. */
#define AT(type, field) offsetof(type, field)
static const size_t layout[] = {
    AT(run_state, out_fd), AT(run_state, err_fd), AT(run_state, capture_err),
    AT(run_state, stop), AT(run_state, cap), AT(run_state, out_size), AT(run_state, err_size),
    AT(run_state, hostcalls), AT(run_state, max_hostcalls), AT(run_state, stdin_data),
    AT(run_state, stdin_len), AT(run_state, stdin_pos), AT(run_state, closed),
    AT(run_state, calls), AT(run_state, memory_base), AT(run_state, trip), AT(run_state, watch),
    AT(run_state, out_spilled), AT(run_state, err_spilled), AT(run_state, out_inline),
    AT(run_state, err_inline), sizeof(run_state),
    AT(run_plan, pre), AT(run_plan, max_memory), AT(run_plan, fuel), AT(run_plan, has_fuel),
    AT(run_plan, capture_stderr), AT(run_plan, argv), AT(run_plan, argc),
    AT(run_plan, argv_len), AT(run_plan, max_output), AT(run_plan, max_hostcalls),
    AT(run_plan, owned_stdio), AT(run_plan, tripwire), AT(run_plan, max_table_elements),
    AT(run_plan, max_instances), AT(run_plan, max_tables), AT(run_plan, max_memories),
    sizeof(run_plan),
    AT(run_in, engine), AT(run_in, state), AT(run_in, plan), AT(run_in, deadline),
    AT(run_in, deadline_ns), AT(run_in, names), AT(run_in, values), AT(run_in, envc),
    AT(run_in, names_len), AT(run_in, values_len), AT(run_in, stdin_data),
    AT(run_in, stdin_len), AT(run_in, out_path), AT(run_in, err_path), AT(run_in, cap),
    AT(run_in, out_fd), AT(run_in, err_fd), AT(run_in, trip), AT(run_in, watch),
    sizeof(run_in),
    AT(run_out, error), AT(run_out, trap), AT(run_out, memory_bytes), AT(run_out, fuel_left),
    AT(run_out, called), AT(run_out, status), AT(run_out, wall_ns), AT(run_out, cpu_ns),
    AT(run_out, out_size), AT(run_out, err_size), AT(run_out, grow_refused), sizeof(run_out),
    AT(due_entry, deadline_ns), AT(due_entry, next), AT(due_entry, prev),
    AT(due_entry, target), AT(due_entry, kind), AT(due_entry, listed), sizeof(due_entry),
    AT(trip_state, lock), AT(trip_state, fired), AT(trip_state, revoked),
    AT(trip_state, reserved), AT(trip_state, page), AT(trip_state, due), sizeof(trip_state),
    AT(epoch_watch, deadline_ns), AT(epoch_watch, cancelled), AT(epoch_watch, reason),
    AT(epoch_watch, due), sizeof(epoch_watch),
};
#undef AT

/* -1 unless the caller was built for this library: its function table and the layout
 * of every structure it shares (`layout`, `count` entries). */
int stockade_fast_init(void **functions, size_t count, size_t union_offset,
                       const size_t *caller_layout, size_t layout_count) {
    if (count != F_COUNT || layout_count != sizeof layout / sizeof layout[0]
        || memcmp(caller_layout, layout, sizeof layout) != 0)
        return -1;
    memcpy(fn, functions, sizeof fn);
    extern_of = union_offset;
    static bool fork_handled;
    if (!fork_handled) {
        if (pthread_atfork(due_before_fork, due_after_fork_parent, due_after_fork_child))
            return -1;
        fork_handled = true;
    }
    return 0;
}

/* Point `out` at the `count` entries of `blob`; false unless exactly `count` entries
 * end within `len` bytes (a malformed block is refused, never read past). */
static bool split(const char *blob, size_t len, size_t count, const char **out) {
    const char *end = blob + len;
    for (size_t i = 0; i < count; i++) {
        const char *nul = blob < end ? memchr(blob, 0, (size_t)(end - blob)) : NULL;
        if (!nul) return false;
        out[i] = blob;
        blob = nul + 1;
    }
    return blob == end;
}

static int fast_run(const run_in *in, const run_plan *plan, run_out *out);

/* Ready the slot's shared state for a run of `plan` (what the owned calls read): a fresh
 * budget, cap, counts and descriptors, and this run's stdin (kept only while it runs). */
static void start_state(run_state *st, const run_plan *plan, const run_in *in) {
    memset(st->calls, 0, sizeof st->calls);
    memset(st->closed, 0, sizeof st->closed);
    st->stop = 0;
    st->hostcalls = 0;
    st->out_size = st->err_size = 0;
    st->out_spilled = st->err_spilled = 0;
    st->capture_err = plan->capture_stderr;
    st->cap = plan->max_output;
    st->max_hostcalls = plan->max_hostcalls;
    st->stdin_data = in->stdin_data;
    st->stdin_len = in->stdin_len;
    st->stdin_pos = 0;
    st->memory_base = NULL;
    st->watch = !plan->tripwire && in->deadline_ns >= 0 ? in->watch : NULL;
}

/* The run, timed, and the sizes of what the guest wrote. With owned standard streams
 * the guest writes only through them, so their counts are the sizes; else the files'
 * (closed with the store by then). */
int stockade_fast_run(const run_in *in, run_out *out) {
    uint64_t wall0 = now_ns(CLOCK_MONOTONIC), cpu0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    const run_plan *plan = in->plan;
    run_state *st = in->state;
    memset(out, 0, sizeof *out);
    start_state(st, plan, in);
    fast_run(in, plan, out);
    out->cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    out->wall_ns = now_ns(CLOCK_MONOTONIC) - wall0;
    st->stdin_data = NULL; /* the request's body is the caller's again */
    st->stdin_len = 0;
    if (plan->owned_stdio) {
        out->out_size = st->out_size;
        out->err_size = plan->capture_stderr ? st->err_size : 0;
    } else {
        out->out_size = lseek(in->out_fd, 0, SEEK_END);
        out->err_size = plan->capture_stderr ? lseek(in->err_fd, 0, SEEK_END) : 0;
    }
    return 0;
}

static int fast_run(const run_in *in, const run_plan *plan, run_out *out) {
    _Alignas(16) uint8_t instance[64];
    _Alignas(16) uint8_t item[64];
    const char *argv[MAX_STRINGS], *names[MAX_STRINGS], *values[MAX_STRINGS];
    if (plan->argc > MAX_STRINGS || in->envc > MAX_STRINGS) {
        out->status = RUN_TOO_MANY;
        return 0;
    }
    if (!split(plan->argv, plan->argv_len, plan->argc, argv)
        || !split(in->names, in->names_len, in->envc, names)
        || !split(in->values, in->values_len, in->envc, values)) {
        out->status = RUN_BAD_STRINGS;
        return 0;
    }
    bool armed = false, listed = false, watched = false;
    if (plan->tripwire && in->trip && in->deadline_ns >= 0) {
        /* Listed before the store exists: a deadline already past when the page is armed
         * revokes it before the guest's first instruction. */
        if (stockade_trip_due(in->trip, in->deadline_ns) != 0) {
            out->status = RUN_NO_DEADLINE;
            return 0;
        }
        listed = true;
    }
    void *store = CALL(F_STORE_NEW, void *(*)(void *, void *, void *))(in->engine, in->state,
                                                                       NULL);
    void *cx = CALL(F_STORE_CONTEXT, void *(*)(void *))(store);
    CALL(F_STORE_LIMITER, void (*)(void *, int64_t, int64_t, int64_t, int64_t, int64_t))(
        store, plan->max_memory, plan->max_table_elements, plan->max_instances,
        plan->max_tables, plan->max_memories);
    if (plan->has_fuel) {
        out->error = CALL(F_SET_FUEL, void *(*)(void *, uint64_t))(cx, plan->fuel);
        if (out->error) { out->status = RUN_FUEL; goto done; }
    }
    if (!plan->tripwire && in->watch && in->deadline_ns >= 0) {
        if (stockade_watch_start(store, cx, in->watch, in->engine, in->deadline_ns) != 0) {
            out->status = RUN_NO_DEADLINE;
            goto done;
        }
        watched = true;
    } else {
        CALL(F_SET_EPOCH_DEADLINE, void (*)(void *, uint64_t))(cx, in->deadline);
    }

    void *wasi = CALL(F_WASI_NEW, void *(*)(void))();
    /* Both refuse text that is not UTF-8. */
    if (!CALL(F_WASI_ARGV, bool (*)(void *, size_t, const char **))(wasi, plan->argc, argv)
        || (in->envc && !CALL(F_WASI_ENV, bool (*)(void *, size_t, const char **,
                                                   const char **))(
                wasi, in->envc, names, values))) {
        CALL(F_WASI_DELETE, void (*)(void *))(wasi);
        out->status = RUN_BAD_STRINGS;
        goto done;
    }
    /* Owned standard streams never reach WASI's descriptors 0-2 for reading or writing:
     * its own stdio stays empty and no file is opened for it (two opens and closes a
     * run). Its other answers on 0-2 (fdstat, filestat, seek) are those of a stream
     * either way. */
    if (!plan->owned_stdio) {
        if (in->stdin_len) {
            byte_vec vec;
            CALL(F_BYTE_VEC_NEW, void (*)(byte_vec *, size_t, const uint8_t *))(
                &vec, in->stdin_len, in->stdin_data);
            CALL(F_WASI_STDIN_BYTES, void (*)(void *, byte_vec *))(wasi, &vec);
        }
        if (!CALL(F_WASI_STDOUT_FILE, bool (*)(void *, const char *))(wasi, in->out_path)
            || (plan->capture_stderr
                && !CALL(F_WASI_STDERR_FILE, bool (*)(void *, const char *))(wasi,
                                                                            in->err_path))) {
            CALL(F_WASI_DELETE, void (*)(void *))(wasi);
            out->status = RUN_WASI_FILES;
            goto done;
        }
    }
    out->error = CALL(F_SET_WASI, void *(*)(void *, void *))(cx, wasi);
    if (out->error) { out->status = RUN_WASI; goto done; }
    *in->cap = plan->max_output; /* only now: the files were just truncated for this run */

    out->error = CALL(F_PRE_INSTANTIATE, void *(*)(void *, void *, void *, void **))(
        plan->pre, cx, instance, &out->trap);
    if (!out->error && !out->trap
        && CALL(F_EXPORT_GET, bool (*)(void *, void *, const char *, size_t, void *))(
            cx, instance, "memory", 6, item) && item[0] == 3 /* WASMTIME_EXTERN_MEMORY */)
        /* Where it lies, for a process that stops the guest from another thread and reads
         * its size from the mappings (`isolate.guestmem`). */
        in->state->memory_base = CALL(F_MEMORY_DATA, uint8_t *(*)(void *, void *))(
            cx, item + extern_of);
    if (!out->error && !out->trap && plan->tripwire) {
        /* Armed before any guest code: the rewriting moved the start function out of
         * instantiation, into an export run here. */
        if (!CALL(F_EXPORT_GET, bool (*)(void *, void *, const char *, size_t, void *))(
                cx, instance, TRIP_EXPORT, sizeof TRIP_EXPORT - 1, item)
            || item[0] != 3 /* WASMTIME_EXTERN_MEMORY */) {
            out->status = RUN_NO_TRIPWIRE;
            goto done;
        }
        stockade_trip_arm(in->trip, CALL(F_MEMORY_DATA, uint8_t *(*)(void *, void *))(
            cx, item + extern_of));
        armed = true;
        if (CALL(F_EXPORT_GET, bool (*)(void *, void *, const char *, size_t, void *))(
                cx, instance, TRIP_START, sizeof TRIP_START - 1, item) && item[0] == 0) {
            out->error = CALL(F_FUNC_CALL,
                              void *(*)(void *, void *, void *, size_t, void *, size_t,
                                        void **))(cx, item + extern_of, NULL, 0, NULL, 0,
                                                  &out->trap);
            out->called = 1;
        }
    }
    if (!out->error && !out->trap) {
        if (!CALL(F_EXPORT_GET, bool (*)(void *, void *, const char *, size_t, void *))(
                cx, instance, "_start", 6, item) || item[0] != 0 /* WASMTIME_EXTERN_FUNC */) {
            out->status = RUN_NO_START;
            goto done;
        }
        out->error = CALL(F_FUNC_CALL,
                          void *(*)(void *, void *, void *, size_t, void *, size_t, void **))(
            cx, item + extern_of, NULL, 0, NULL, 0, &out->trap);
        out->called = 1;
    }
    if (out->called  /* an instance exists (its start function ran, or _start) */
        && CALL(F_EXPORT_GET, bool (*)(void *, void *, const char *, size_t, void *))(
            cx, instance, "memory", 6, item) && item[0] == 3 /* WASMTIME_EXTERN_MEMORY */)
        out->memory_bytes = CALL(F_MEMORY_DATA_SIZE, size_t (*)(void *, void *))(
            cx, item + extern_of);
    if (out->called  /* the largest grow the limit refused, for the memory verdict */
        && CALL(F_EXPORT_GET, bool (*)(void *, void *, const char *, size_t, void *))(
            cx, instance, GROW_EXPORT, sizeof GROW_EXPORT - 1, item)
        && item[0] == 1 /* WASMTIME_EXTERN_GLOBAL */) {
        val_t value;
        CALL(F_GLOBAL_GET, void (*)(void *, void *, val_t *))(cx, item + extern_of, &value);
        out->grow_refused = value.of.i64;
    }
    if (plan->has_fuel) {
        void *error = CALL(F_GET_FUEL, void *(*)(void *, uint64_t *))(cx, &out->fuel_left);
        if (error && !out->error) { out->error = error; out->status = RUN_FUEL; }
        else if (error) CALL(F_ERROR_DELETE, void (*)(void *))(error);
    }
done:
    if (listed) stockade_trip_undue(in->trip); /* no deadline fires it after this */
    if (watched) stockade_watch_stop(in->watch); /* nor moves the epoch for it */
    if (armed) stockade_trip_disarm(in->trip); /* before the store frees the page */
    CALL(F_STORE_DELETE, void (*)(void *))(store);
    return 0;
}

/* -- the owned standard streams ------------------------------------------------------
 * A run's store data points at its slot's `run_state` (`_run.py`'s `RunState`). No
 * preopens exist on the fast path, so descriptors 0-2 are the only ones: stdin is the
 * request's bytes, stdout and stderr the slot's inline bytes, then its memfds. */

/* Indexes of `calls`; `_native.py` CALL_NAMES names them (poll_oneoff is `_poll.py`'s). */
enum { CALL_FD_WRITE = 0, CALL_FD_READ = 1, CALL_FD_CLOSE = 2, CALL_RANDOM_GET = 3,
       CALL_FD_SYNC = 5, CALL_FD_DATASYNC = 6, CALL_SOCK_ACCEPT = 7, CALL_SOCK_RECV = 8,
       CALL_SOCK_SEND = 9, CALL_SOCK_SHUTDOWN = 10 };

enum { STOP_NONE = 0, STOP_STDOUT = 1, STOP_STDERR = 2, STOP_HOSTCALLS = 3 };
enum { E_SUCCESS = 0, E_BADF = 8, E_FAULT = 21, E_INVAL = 28 };
#define MAX_IOVECS 1024              /* IOV_MAX: EINVAL beyond (hostcalls.abi) */
#define MAX_IO_BYTES (4u << 20)      /* bytes one call copies (hostcalls.abi) */
#define RANDOM_CHUNK (1u << 20)      /* bytes random_get fills between deadline checks */

typedef struct { uint64_t i64; uint64_t high; } val_raw; /* wasmtime_val_raw_t: 16 bytes */

static void *stop(run_state *st, int reason, const char *message) {
    st->stop = reason;
    return CALL(F_TRAP_NEW, void *(*)(const char *, size_t))(message, strlen(message));
}

/* The run's state and the guest's memory, after counting the call; NULL with *trap set
 * when the budget is spent. */
static run_state *enter(void *caller, int call, uint8_t **base, size_t *size, void **trap) {
    void *cx = CALL(F_CALLER_CONTEXT, void *(*)(void *))(caller);
    run_state *st = CALL(F_CONTEXT_GET_DATA, void *(*)(void *))(cx);
    *trap = NULL;
    st->calls[call]++; /* the refused call too, as the sandbox's meter counts it */
    if (++st->hostcalls > st->max_hostcalls) {
        *trap = stop(st, STOP_HOSTCALLS, "host-call budget exhausted");
        return NULL;
    }
    _Alignas(16) uint8_t item[64];
    *base = NULL;
    *size = 0;
    if (CALL(F_CALLER_EXPORT_GET, bool (*)(void *, const char *, size_t, void *))(
            caller, "memory", 6, item) && item[0] == 3 /* WASMTIME_EXTERN_MEMORY */) {
        *base = CALL(F_MEMORY_DATA, uint8_t *(*)(void *, void *))(cx, item + extern_of);
        *size = CALL(F_MEMORY_DATA_SIZE, size_t (*)(void *, void *))(cx, item + extern_of);
    }
    return st;
}

static bool in_memory(size_t size, uint64_t offset, uint64_t length) {
    return offset <= size && length <= size - offset;
}

/* Check an iovec array: EINVAL past MAX_IOVECS, EFAULT outside memory; the total asked. */
static int check_iovecs(const uint8_t *base, size_t size, uint32_t iovs, uint32_t n,
                        uint64_t *total) {
    if (n > MAX_IOVECS) return E_INVAL;
    if (!base || !in_memory(size, iovs, (uint64_t)n * 8)) return E_FAULT;
    *total = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t buf, len;
        memcpy(&buf, base + iovs + 8 * i, 4);
        memcpy(&len, base + iovs + 8 * i + 4, 4);
        if (!in_memory(size, buf, len)) return E_FAULT;
        *total += len;
    }
    return E_SUCCESS;
}

static void put_u32(uint8_t *base, uint32_t at, uint32_t value) { memcpy(base + at, &value, 4); }

/* Write `len` bytes of `data` to `file` at offset `at`: the bytes written. */
static uint64_t write_at(int file, const uint8_t *data, uint64_t len, int64_t at) {
    uint64_t put = 0;
    while (put < len) {
        ssize_t wrote = pwrite(file, data + put, len - put, at + (int64_t)put);
        if (wrote <= 0) break;
        put += (uint64_t)wrote;
    }
    return put;
}

/* Append `take` bytes to stream `fd` (1 or 2) at `*written`, which it advances: into the
 * stream's inline bytes while they fit, else its file (moving the inline bytes there
 * first). The bytes appended: fewer when the file refuses some. */
static uint32_t put_output(run_state *st, uint32_t fd, const uint8_t *data, uint32_t take,
                           int64_t *written) {
    int32_t *spilled = fd == 1 ? &st->out_spilled : &st->err_spilled;
    uint8_t *kept = fd == 1 ? st->out_inline : st->err_inline;
    int file = fd == 1 ? st->out_fd : st->err_fd;
    if (!__atomic_load_n(spilled, __ATOMIC_RELAXED)) {
        if ((uint64_t)*written + take <= INLINE_OUTPUT) {
            memcpy(kept + *written, data, take);
            __atomic_store_n(written, *written + take, __ATOMIC_RELEASE);
            return take;
        }
        if (write_at(file, kept, (uint64_t)*written, 0) != (uint64_t)*written) return 0;
        __atomic_store_n(spilled, 1, __ATOMIC_RELEASE);
    }
    uint64_t put = write_at(file, data, take, *written);
    __atomic_store_n(written, *written + (int64_t)put, __ATOMIC_RELEASE);
    return (uint32_t)put;
}

void *stockade_fd_write(void *env, void *caller, val_raw *args, size_t nargs) {
    (void)env; (void)nargs;
    uint8_t *base; size_t size; void *trap;
    run_state *st = enter(caller, CALL_FD_WRITE, &base, &size, &trap);
    if (!st) return trap;
    uint32_t fd = (uint32_t)args[0].i64, iovs = (uint32_t)args[1].i64,
             n = (uint32_t)args[2].i64, ret = (uint32_t)args[3].i64;
    uint64_t total;
    int err = (fd == 1 || fd == 2) && !st->closed[fd] ? check_iovecs(base, size, iovs, n, &total)
                                                      : E_BADF;
    if (err == E_SUCCESS && !in_memory(size, ret, 4)) err = E_FAULT;
    if (err != E_SUCCESS) { args[0].i64 = (uint32_t)err; return NULL; }
    if (fd == 2 && !st->capture_err) {  /* discarded: everything accepted */
        put_u32(base, ret, total > UINT32_MAX ? UINT32_MAX : (uint32_t)total);
        args[0].i64 = E_SUCCESS;
        return NULL;
    }
    uint64_t room = MAX_IO_BYTES;
    bool capped = false; /* the room is what the cap leaves */
    if (st->cap >= 0) {
        int64_t left = st->cap - st->out_size - st->err_size;
        if (left <= 0 && total) return stop(st, fd == 1 ? STOP_STDOUT : STOP_STDERR,
                                            "output limit reached");
        if (left >= 0 && (uint64_t)left <= room) { room = (uint64_t)left; capped = true; }
    }
    int64_t *written = fd == 1 ? &st->out_size : &st->err_size;
    uint32_t done = 0;
    for (uint32_t i = 0; i < n && room; i++) {
        uint32_t buf, len;
        memcpy(&buf, base + iovs + 8 * i, 4);
        memcpy(&len, base + iovs + 8 * i + 4, 4);
        uint32_t take = len < room ? len : (uint32_t)room;
        uint32_t put = put_output(st, fd, base + buf, take, written);
        done += put;
        room -= put;
        /* Past the cap what fits is kept and the guest stops: a short write it may
         * ignore would lose the rest without a word (hostcalls.handlers, alike). */
        if (capped && len > take) return stop(st, fd == 1 ? STOP_STDOUT : STOP_STDERR,
                                              "output limit reached");
        if (len) break; /* the first non-empty buffer only, as wasmtime's WASI writes */
    }
    put_u32(base, ret, done);
    args[0].i64 = E_SUCCESS;
    return NULL;
}

void *stockade_fd_read(void *env, void *caller, val_raw *args, size_t nargs) {
    (void)env; (void)nargs;
    uint8_t *base; size_t size; void *trap;
    run_state *st = enter(caller, CALL_FD_READ, &base, &size, &trap);
    if (!st) return trap;
    uint32_t fd = (uint32_t)args[0].i64, iovs = (uint32_t)args[1].i64,
             n = (uint32_t)args[2].i64, ret = (uint32_t)args[3].i64;
    uint64_t total;
    int err = fd == 0 && !st->closed[0] ? check_iovecs(base, size, iovs, n, &total) : E_BADF;
    if (err == E_SUCCESS && !in_memory(size, ret, 4)) err = E_FAULT;
    if (err != E_SUCCESS) { args[0].i64 = (uint32_t)err; return NULL; }
    uint64_t room = MAX_IO_BYTES;
    uint32_t done = 0;
    for (uint32_t i = 0; i < n && room && st->stdin_pos < st->stdin_len; i++) {
        uint32_t buf, len;
        memcpy(&buf, base + iovs + 8 * i, 4);
        memcpy(&len, base + iovs + 8 * i + 4, 4);
        uint64_t take = st->stdin_len - st->stdin_pos;
        if (len < take) take = len;
        if (room < take) take = room;
        memcpy(base + buf, st->stdin_data + st->stdin_pos, take);
        st->stdin_pos += take;
        done += (uint32_t)take;
        room -= take;
        if (len) break; /* the first non-empty buffer only, as wasmtime's WASI reads */
    }
    put_u32(base, ret, done);
    args[0].i64 = E_SUCCESS;
    return NULL;
}

void *stockade_fd_close(void *env, void *caller, val_raw *args, size_t nargs) {
    (void)env; (void)nargs;
    uint8_t *base; size_t size; void *trap;
    run_state *st = enter(caller, CALL_FD_CLOSE, &base, &size, &trap);
    if (!st) return trap;
    uint32_t fd = (uint32_t)args[0].i64;
    int err = fd < 3 && !st->closed[fd] ? E_SUCCESS : E_BADF;
    if (err == E_SUCCESS) st->closed[fd] = 1;
    args[0].i64 = (uint32_t)err;
    return NULL;
}

/* Whether the run must stop now, asked between the chunks of a long host call: its
 * tripwire fired, or on an epochs engine (no tripwire) its watch ended, as its epoch
 * callback would find (the callback runs only once the guest is back in its code: a
 * 1 GiB call ran 4 s past a 300 ms timeout). */
static bool stopped(run_state *st) {
    if (st->trip && __atomic_load_n(&st->trip->fired, __ATOMIC_RELAXED)) return true;
    return st->watch && watch_ended(st->watch);
}

void *stockade_random_get(void *env, void *caller, val_raw *args, size_t nargs) {
    (void)env; (void)nargs;
    uint8_t *base; size_t size; void *trap;
    run_state *st = enter(caller, CALL_RANDOM_GET, &base, &size, &trap);
    if (!st) return trap;
    uint32_t buf = (uint32_t)args[0].i64, len = (uint32_t)args[1].i64;
    if (!base || !in_memory(size, buf, len)) { args[0].i64 = E_FAULT; return NULL; }
    /* One call can fill all of memory (1 GiB: seconds): in chunks, and past the run's
     * deadline the guest traps, as at its next probe or epoch check. */
    for (uint32_t done = 0; done < len;) {
        if (done && stopped(st))
            return CALL(F_TRAP_NEW, void *(*)(const char *, size_t))(
                "random_get past the deadline", 28);
        uint32_t chunk = len - done < RANDOM_CHUNK ? len - done : RANDOM_CHUNK;
        ssize_t got = getrandom(base + buf + done, chunk, 0);
        if (got <= 0) { args[0].i64 = 29 /* EIO */; return NULL; }
        done += (uint32_t)got;
    }
    args[0].i64 = E_SUCCESS;
    return NULL;
}

/* fd_sync and fd_datasync: no descriptor here is a file (0-2 are streams, nothing else is
 * open), so EBADF, as wasmtime answers for a stream; the sock_* calls: no descriptor is a
 * socket (none is handed over), so EBADF too. Counted like every owned call. */
static void *no_such_descriptor(void *caller, int call, val_raw *args) {
    uint8_t *base; size_t size; void *trap;
    run_state *st = enter(caller, call, &base, &size, &trap);
    if (!st) return trap;
    args[0].i64 = E_BADF;
    return NULL;
}

void *stockade_fd_sync(void *env, void *caller, val_raw *args, size_t nargs) {
    (void)env; (void)nargs;
    return no_such_descriptor(caller, CALL_FD_SYNC, args);
}

void *stockade_fd_datasync(void *env, void *caller, val_raw *args, size_t nargs) {
    (void)env; (void)nargs;
    return no_such_descriptor(caller, CALL_FD_DATASYNC, args);
}

#define NO_SOCKET(name, call) \
    void *stockade_##name(void *env, void *caller, val_raw *args, size_t nargs) { \
        (void)env; (void)nargs; \
        return no_such_descriptor(caller, call, args); \
    }
NO_SOCKET(sock_accept, CALL_SOCK_ACCEPT)
NO_SOCKET(sock_recv, CALL_SOCK_RECV)
NO_SOCKET(sock_send, CALL_SOCK_SEND)
NO_SOCKET(sock_shutdown, CALL_SOCK_SHUTDOWN)
