;; Asks WASI everything but read and write about descriptors 0-2, and prints the answers
;; raw: where the standard streams are owned (and no file backs them), every answer
;; must still be the one a guest gets where they are files (the bytes are compared
;; between backends). Then it closes stdout and tries to write to it again.
;;
;; Output (fd_write to stdout, one call): for k in 0..11 the errno of probe k as one
;; i32, then fdstat of 0, 1 and 2 (24 bytes each), then filestat of 1 (64 bytes).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $filestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_tell" (func $tell (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_sync" (func $sync (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_datasync" (func $datasync (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $setflags (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_size" (func $setsize (param i32 i64) (result i32)))
  (import "wasi_snapshot_preview1" "fd_pwrite" (func $pwrite (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; iovec at 0: the report, 48 + 72 + 64 = 184 bytes at 1024
  (data (i32.const 0) "\00\04\00\00\b8\00\00\00")
  ;; iovec at 8: "after close\n" at 512
  (data (i32.const 8) "\00\02\00\00\0c\00\00\00")
  (data (i32.const 512) "after close\n")
  (func $errno (param $k i32) (param $value i32)
    (i32.store (i32.add (i32.const 1024) (i32.mul (local.get $k) (i32.const 4))) (local.get $value)))
  (func (export "_start")
    (call $errno (i32.const 0) (call $fdstat (i32.const 0) (i32.const 1072)))
    (call $errno (i32.const 1) (call $fdstat (i32.const 1) (i32.const 1096)))
    (call $errno (i32.const 2) (call $fdstat (i32.const 2) (i32.const 1120)))
    (call $errno (i32.const 3) (call $filestat (i32.const 1) (i32.const 1144)))
    (call $errno (i32.const 4) (call $seek (i32.const 1) (i64.const 0) (i32.const 2) (i32.const 256)))
    (call $errno (i32.const 5) (call $tell (i32.const 1) (i32.const 256)))
    (call $errno (i32.const 6) (call $sync (i32.const 1)))
    (call $errno (i32.const 7) (call $datasync (i32.const 2)))
    (call $errno (i32.const 8) (call $setflags (i32.const 1) (i32.const 1)))
    (call $errno (i32.const 9) (call $setsize (i32.const 1) (i64.const 0)))
    (call $errno (i32.const 10) (call $pwrite (i32.const 1) (i32.const 8) (i32.const 1) (i64.const 0) (i32.const 256)))
    (call $errno (i32.const 11) (call $fdstat (i32.const 3) (i32.const 300)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 256)))
    ;; A closed stdout takes no more output: exit 9 if the write after the close worked.
    (drop (call $fd_close (i32.const 1)))
    (if (i32.eqz (call $fd_write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 256)))
      (then (call $proc_exit (i32.const 9))))))
