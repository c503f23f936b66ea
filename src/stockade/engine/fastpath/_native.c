/* One fast-path run in a single C call: the same wasmtime C API calls as `_run.py`'s
 * `execute`, minus a ctypes transition per call (about 15 of them per run).
 *
 * Built by `scripts/build_native.py` into `libstockade_fastrun.so` beside this file; without it
 * the fast path runs the Python version. It links against nothing: the wasmtime
 * functions are handed over by address (`stockade_fast_init`), from the library
 * wasmtime-py loaded, and the layouts it cannot know (instance and extern handles)
 * are opaque buffers with offsets measured by ctypes. Pinned, like `_capi.py`, to
 * the wasmtime 50 C API.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct { size_t size; uint8_t *data; } byte_vec;

enum {
    F_STORE_NEW, F_STORE_CONTEXT, F_STORE_LIMITER, F_STORE_DELETE, F_SET_FUEL, F_GET_FUEL,
    F_SET_EPOCH_DEADLINE, F_SET_WASI, F_WASI_NEW, F_WASI_DELETE, F_WASI_ARGV, F_WASI_ENV,
    F_WASI_STDIN_BYTES, F_WASI_STDOUT_FILE, F_WASI_STDERR_FILE, F_BYTE_VEC_NEW,
    F_PRE_INSTANTIATE, F_EXPORT_GET, F_FUNC_CALL, F_MEMORY_DATA_SIZE, F_ERROR_DELETE, F_COUNT
};

static void *fn[F_COUNT];
static size_t extern_of; /* offset of the union in wasmtime_extern_t */

#define CALL(index, type) ((type)fn[index])

/* Outcome of the steps before the guest runs (status): the error, if any, is in `error`. */
enum { RUN_OK = 0, RUN_FUEL = 1, RUN_WASI_FILES = 2, RUN_WASI = 3, RUN_NO_START = 4,
       RUN_TOO_MANY = 5, RUN_BAD_STRINGS = 6 };

typedef struct {
    void *engine, *pre, *data;
    int64_t max_memory;
    uint64_t fuel;
    int32_t has_fuel, capture_stderr;
    uint64_t deadline;
    const char *argv, *names, *values; /* NUL-terminated entries, back to back */
    size_t argc, envc;
    size_t argv_len, names_len, values_len; /* bytes, terminators included */
    const uint8_t *stdin_data;
    size_t stdin_len;
    const char *out_path, *err_path;
    int64_t max_output;   /* -1: unlimited */
    int64_t *cap;         /* the slot's cap cell, set once the files are open */
    int32_t out_fd, err_fd; /* the files behind out_path and err_path */
} run_in;

typedef struct {
    void *error, *trap;
    uint64_t memory_bytes, fuel_left;
    int32_t called, status;
    uint64_t wall_ns, cpu_ns; /* of this call, on this thread */
    int64_t out_size, err_size; /* bytes the guest wrote (-1: not read) */
} run_out;

static uint64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define MAX_STRINGS 1024 /* argv and environment entries; more take the Python path */

int stockade_fast_init(void **functions, size_t count, size_t union_offset) {
    if (count != F_COUNT) return -1;
    memcpy(fn, functions, sizeof fn);
    extern_of = union_offset;
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

static int fast_run(const run_in *in, run_out *out);

/* The run, timed, and the sizes of what the guest wrote (the files are closed by then). */
int stockade_fast_run(const run_in *in, run_out *out) {
    uint64_t wall0 = now_ns(CLOCK_MONOTONIC), cpu0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    memset(out, 0, sizeof *out);
    fast_run(in, out);
    out->cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    out->wall_ns = now_ns(CLOCK_MONOTONIC) - wall0;
    out->out_size = lseek(in->out_fd, 0, SEEK_END);
    out->err_size = in->capture_stderr ? lseek(in->err_fd, 0, SEEK_END) : 0;
    return 0;
}

static int fast_run(const run_in *in, run_out *out) {
    _Alignas(16) uint8_t instance[64];
    _Alignas(16) uint8_t item[64];
    const char *argv[MAX_STRINGS], *names[MAX_STRINGS], *values[MAX_STRINGS];
    if (in->argc > MAX_STRINGS || in->envc > MAX_STRINGS) {
        out->status = RUN_TOO_MANY;
        return 0;
    }
    if (!split(in->argv, in->argv_len, in->argc, argv)
        || !split(in->names, in->names_len, in->envc, names)
        || !split(in->values, in->values_len, in->envc, values)) {
        out->status = RUN_BAD_STRINGS;
        return 0;
    }
    void *store = CALL(F_STORE_NEW, void *(*)(void *, void *, void *))(in->engine, in->data, NULL);
    void *cx = CALL(F_STORE_CONTEXT, void *(*)(void *))(store);
    CALL(F_STORE_LIMITER, void (*)(void *, int64_t, int64_t, int64_t, int64_t, int64_t))(
        store, in->max_memory, -1, -1, -1, -1);
    if (in->has_fuel) {
        out->error = CALL(F_SET_FUEL, void *(*)(void *, uint64_t))(cx, in->fuel);
        if (out->error) { out->status = RUN_FUEL; goto done; }
    }
    CALL(F_SET_EPOCH_DEADLINE, void (*)(void *, uint64_t))(cx, in->deadline);

    void *wasi = CALL(F_WASI_NEW, void *(*)(void))();
    /* Both refuse text that is not UTF-8. */
    if (!CALL(F_WASI_ARGV, bool (*)(void *, size_t, const char **))(wasi, in->argc, argv)
        || (in->envc && !CALL(F_WASI_ENV, bool (*)(void *, size_t, const char **,
                                                   const char **))(
                wasi, in->envc, names, values))) {
        CALL(F_WASI_DELETE, void (*)(void *))(wasi);
        out->status = RUN_BAD_STRINGS;
        goto done;
    }
    if (in->stdin_len) {
        byte_vec vec;
        CALL(F_BYTE_VEC_NEW, void (*)(byte_vec *, size_t, const uint8_t *))(
            &vec, in->stdin_len, in->stdin_data);
        CALL(F_WASI_STDIN_BYTES, void (*)(void *, byte_vec *))(wasi, &vec);
    }
    if (!CALL(F_WASI_STDOUT_FILE, bool (*)(void *, const char *))(wasi, in->out_path)
        || (in->capture_stderr
            && !CALL(F_WASI_STDERR_FILE, bool (*)(void *, const char *))(wasi, in->err_path))) {
        CALL(F_WASI_DELETE, void (*)(void *))(wasi);
        out->status = RUN_WASI_FILES;
        goto done;
    }
    out->error = CALL(F_SET_WASI, void *(*)(void *, void *))(cx, wasi);
    if (out->error) { out->status = RUN_WASI; goto done; }
    *in->cap = in->max_output; /* only now: the files were just truncated for this run */

    out->error = CALL(F_PRE_INSTANTIATE, void *(*)(void *, void *, void *, void **))(
        in->pre, cx, instance, &out->trap);
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
        if (CALL(F_EXPORT_GET, bool (*)(void *, void *, const char *, size_t, void *))(
                cx, instance, "memory", 6, item) && item[0] == 3 /* WASMTIME_EXTERN_MEMORY */)
            out->memory_bytes = CALL(F_MEMORY_DATA_SIZE, size_t (*)(void *, void *))(
                cx, item + extern_of);
    }
    if (in->has_fuel) {
        void *error = CALL(F_GET_FUEL, void *(*)(void *, uint64_t *))(cx, &out->fuel_left);
        if (error && !out->error) { out->error = error; out->status = RUN_FUEL; }
        else if (error) CALL(F_ERROR_DELETE, void (*)(void *))(error);
    }
done:
    CALL(F_STORE_DELETE, void (*)(void *))(store);
    return 0;
}
