;; Writes 1 MiB to stdout (more than a pipe holds) in 64 KiB writes, then spins without
;; another host call: the output written before the deadline is the guest's to keep.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; iovec at 0: buffer at 65536, 65536 bytes; bytes written at 16
  (func (export "_start")
    (local $i i32)
    (memory.fill (i32.const 65536) (i32.const 120) (i32.const 65536))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (block $done
      (loop $write
        (br_if $done (i32.ge_u (local.get $i) (i32.const 16)))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $write)))
    (loop $spin (br $spin))))
