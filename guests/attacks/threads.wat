;; Attack (paper: multi-threading): spawn THREADS (64) wasi-threads threads, each
;; spinning for a bounded 2^33 iterations. Needs the `wasi` `thread-spawn` import and a
;; shared memory; a runtime without wasi-threads refuses it before it runs.
(module
  (import "wasi" "thread-spawn" (func $spawn (param i32) (result i32)))
  (import "env" "memory" (memory 1 1 shared))
  (func (export "wasi_thread_start") (param $tid i32) (param $arg i32)
    (local $n i64)
    (loop $spin
      (local.set $n (i64.add (local.get $n) (i64.const 1)))
      (br_if $spin (i64.lt_u (local.get $n) (i64.const 8589934592)))))
  (func (export "_start")
    (local $i i32)
    (loop $more
      (drop (call $spawn (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const 64))))))
