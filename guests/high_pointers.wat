;; Host-call results stored at guest addresses of 2 GiB and above (valid: the memory is
;; 2 GiB + 64 KiB). Opens up to 64 new files in the preopen (fd 3), writing 256 KiB to
;; each, with path_open's new descriptor and fd_write's count stored at 0x80000010: a
;; meter that reads those i32 addresses as signed would never see the descriptor, the
;; new file or the bytes written.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 32769)
  (data (i32.const 16) "f?")
  (func (export "_start") (local $i i32)
    ;; iovec at 64: 256 KiB at 4096
    (i32.store (i32.const 64) (i32.const 4096))
    (i32.store (i32.const 68) (i32.const 262144))
    (loop $next
      (i32.store8 (i32.const 17) (i32.add (i32.const 65) (local.get $i)))
      (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 2)
            (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0)
            (i32.const 0x80000010)))
        (then (drop (call $fd_write (i32.load (i32.const 0x80000010)) (i32.const 64)
                                     (i32.const 1) (i32.const 0x80000010)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 64)))))
)
