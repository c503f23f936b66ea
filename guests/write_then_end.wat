;; Writes "before\n" to stdout and stderr, then ends as the first byte of stdin says:
;;   't' traps (unreachable) in the middle of the run,
;;   'x' exits with status 0xFFFFFFFF (C's exit(-1): past what a process exits with),
;;   'e' exits with status 125 (the largest wasmtime's own WASI accepts),
;;   'g' grows memory one page at a time until refused, then traps,
;;   anything else (or no stdin) returns from _start.
;; Limits set before the run (output cap, host-call budget, memory) must hold, and the
;; verdict must be the same whichever backend runs it.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; iovec at 0: "before\n" at 64; iovec at 16: one byte of stdin into 128
  (data (i32.const 0) "\40\00\00\00\07\00\00\00")
  (data (i32.const 16) "\80\00\00\00\01\00\00\00")
  (data (i32.const 64) "before\n")
  (func (export "_start")
    (local $how i32)
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 32)))
    (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 32)))
    (local.set $how (i32.load8_u (i32.const 128)))
    (if (i32.eq (local.get $how) (i32.const 116)) (then unreachable))
    (if (i32.eq (local.get $how) (i32.const 120)) (then (call $proc_exit (i32.const -1))))
    (if (i32.eq (local.get $how) (i32.const 101)) (then (call $proc_exit (i32.const 125))))
    (if (i32.eq (local.get $how) (i32.const 103))
      (then
        (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
        unreachable))))
