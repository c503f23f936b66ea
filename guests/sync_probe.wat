;; fd_sync and fd_datasync on descriptors that are no files: the standard streams (owned
;; by Stockade on every backend), a closed one and one never opened. Every backend must
;; give the same errnos and count the same calls, whatever the sync policy.
;;
;; Output (fd_write to stdout, one call): the errno of probe k as one i32, k in 0..6.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_sync" (func $sync (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_datasync" (func $datasync (param i32) (result i32)))
  (memory (export "memory") 1)
  ;; iovec at 0: the report, 7 * 4 = 28 bytes at 1024
  (data (i32.const 0) "\00\04\00\00\1c\00\00\00")
  (func $errno (param $k i32) (param $value i32)
    (i32.store (i32.add (i32.const 1024) (i32.mul (local.get $k) (i32.const 4))) (local.get $value)))
  (func (export "_start")
    (call $errno (i32.const 0) (call $sync (i32.const 0)))
    (call $errno (i32.const 1) (call $sync (i32.const 1)))
    (call $errno (i32.const 2) (call $datasync (i32.const 2)))
    (call $errno (i32.const 3) (call $sync (i32.const 9)))
    (call $errno (i32.const 4) (call $fd_close (i32.const 0)))
    (call $errno (i32.const 5) (call $sync (i32.const 0)))
    (call $errno (i32.const 6) (call $datasync (i32.const 0)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 256)))))
