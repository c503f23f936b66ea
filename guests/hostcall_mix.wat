;; Host calls of every kind against the host-call budget: 5 calls the C-API fast path
;; serves natively (fd_write, random_get) and 22 it does not (sock_send, fd_sync and
;; fd_readdir on the standard streams, answered by wasmtime's WASI). 27 owned calls in
;; all: a budget of 26 must stop it on every backend, a budget of 27 must not.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_sync" (func $fd_sync (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  ;; iovec at 0: 1 byte at 16 ("x")
  (data (i32.const 0) "\10\00\00\00\01\00\00\00")
  (data (i32.const 16) "x")
  (func $repeat (param $n i32) (param $what i32)
    (loop $again
      (if (i32.gt_s (local.get $n) (i32.const 0))
        (then
          (if (i32.eq (local.get $what) (i32.const 0))
            (then (drop (call $sock_send (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 32)))))
          (if (i32.eq (local.get $what) (i32.const 1))
            (then (drop (call $fd_sync (i32.const 1)))))
          (if (i32.eq (local.get $what) (i32.const 2))
            (then (drop (call $fd_readdir (i32.const 1) (i32.const 64) (i32.const 8) (i64.const 0) (i32.const 32)))))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br $again)))))
  (func (export "_start")
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))
    (drop (call $random_get (i32.const 128) (i32.const 8)))
    (call $repeat (i32.const 8) (i32.const 0))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))
    (call $repeat (i32.const 7) (i32.const 1))
    (drop (call $random_get (i32.const 128) (i32.const 8)))
    (call $repeat (i32.const 7) (i32.const 2))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))))
